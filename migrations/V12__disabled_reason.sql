-- Why and since when a webhook is disabled: by hand, because its endpoint answered 410 Gone,
-- or because it failed for too long. Webhooks already disabled were disabled by hand.
ALTER TABLE webhooks
    ADD COLUMN disabled_reason text
        CHECK (disabled_reason IN ('gone', 'failing_too_long', 'manual')),
    ADD COLUMN disabled_at timestamptz;

UPDATE webhooks SET disabled_reason = 'manual', disabled_at = updated_at WHERE NOT enabled;
