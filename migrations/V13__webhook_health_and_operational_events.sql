-- Each webhook's Failed deliveries since its last success: what auto-disable and the
-- webhook.failing / webhook.recovered events go by. A row exists once a delivery of the
-- webhook has failed; a success resets it. Written only as deliveries fail or recover, never
-- on the happy path.
CREATE TABLE webhook_health (
    webhook_id uuid PRIMARY KEY,
    company_id text NOT NULL,
    failed_streak integer NOT NULL DEFAULT 0,
    failing_since timestamptz,
    last_failure_at timestamptz,
    -- When webhook.failing was last published for the current streak.
    warned_at timestamptz
);

-- Routing caches know whether a webhook is failing (so a success knows to end the streak):
-- a change here drops the company's cache entry like a change to the webhook itself.
CREATE TRIGGER webhook_health_changed AFTER INSERT OR UPDATE OR DELETE ON webhook_health
    FOR EACH ROW EXECUTE FUNCTION tesoro_webhooks_changed();

-- Events about webhooks (webhook.failing, webhook.disabled, webhook.recovered), written in
-- the transaction that causes them and deleted once the broker confirms their publish: none
-- is lost to a broker outage, and publishing never holds up a delivery.
CREATE TABLE operational_events (
    id uuid PRIMARY KEY,
    event_type text NOT NULL,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
