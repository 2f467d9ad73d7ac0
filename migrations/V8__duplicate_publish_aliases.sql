-- A CRM service that publishes an event again while its delivery is under way makes a second
-- first attempt under a fresh delivery id (the worker cannot tell a fresh event from a
-- duplicate without a query per event). That attempt is logged on the existing delivery as
-- its next one, and the jobs it published name the fresh id: `alias_id` maps them here, and
-- `alias_offset` (the attempts made before the duplicate) renumbers them, so the dedupe by
-- attempt number still holds. NULL for every delivery never published twice; adding nullable
-- columns rewrites nothing.
ALTER TABLE deliveries ADD COLUMN alias_id uuid, ADD COLUMN alias_offset integer;
CREATE INDEX deliveries_alias_idx ON deliveries (alias_id) WHERE alias_id IS NOT NULL;
