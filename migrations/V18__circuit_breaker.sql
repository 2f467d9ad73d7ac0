-- When the webhook's circuit was opened, by the first worker whose breaker opened it; NULL
-- while closed. Written only when a circuit opens or closes, never on the happy path.
ALTER TABLE webhook_health ADD COLUMN circuit_opened_at timestamptz;
