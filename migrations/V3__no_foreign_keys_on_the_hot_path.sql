-- Every delivery and attempt row is written in one statement with its parent rows, so these
-- foreign keys only cost: each check locks the parent row FOR KEY SHARE, and with one busy
-- webhook every concurrent batch locks the same webhooks row (multixacts). Deleting a webhook
-- removes its deliveries and attempts explicitly instead of by cascade.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_webhook_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey;
