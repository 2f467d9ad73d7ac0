-- The events queues the workers have declared (amqp.event_queues names them). When the setting
-- changes, a worker drains the queues recorded here that its layout no longer has, removes
-- them, and forgets them: the broker has no way to list queues over AMQP without an error
-- for each name that does not exist.
CREATE TABLE declared_events_queues (
    name text PRIMARY KEY,
    declared_at timestamptz NOT NULL DEFAULT now()
);

-- Earlier versions declared one events queue, {amqp.prefix}.events, a name only the worker
-- knows: '' stands for it until a worker records it under that name. Only where events may
-- wait in it: a database with webhooks.
INSERT INTO declared_events_queues (name) SELECT '' WHERE EXISTS (SELECT 1 FROM webhooks);
