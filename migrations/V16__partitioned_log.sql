-- The delivery log in time partitions: events, deliveries and attempts each become a table
-- partitioned by range of time, so retention drops a whole partition (free of DELETE and of
-- vacuum) instead of deleting row by row, and no query's cost grows with the log's age.
--
-- Every row is filed under `event_at`: the event's own timestamp (its envelope's, when it
-- carries a plausible one; else when it was received), in milliseconds. A redelivery of an
-- event repeats its envelope, so it is filed under the same time: the dedupe on (event id,
-- webhook id) can include `event_at` (PostgreSQL wants the partition key in every unique key)
-- and still hold for it, across any partition boundary. A delivery's id is a UUID v7 whose
-- time is its `event_at`, so its partition is known from the id alone
-- (`tesoro_log_time`), and attempts are partitioned by their delivery's id on the same
-- bounds. The worker creates the partitions ahead of need and retires them whole
-- (`retention.partition`; storage/partitions.rs).
--
-- The tables as they were become one partition each, below this moment: nothing is copied.
-- Their rows are filed under the Unix epoch (a constant default: no rewrite; no event is filed
-- that far from its receipt), which lookups by id look in beside the id's own time. Attaching them reads each table once (to check that its
-- rows fit the partition) and builds the indexes the new keys need.

-- The time of a UUID v7: its first 48 bits are milliseconds since the Unix epoch.
CREATE FUNCTION tesoro_log_time(id uuid) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN to_timestamp((('x' || lpad(replace(left(id::text, 13), '-', ''), 16, '0'))::bit(64)::bigint)
        / 1000.0);

ALTER TABLE events RENAME TO events_legacy;
ALTER TABLE events_legacy RENAME CONSTRAINT events_pkey TO events_legacy_pkey;
ALTER TABLE deliveries RENAME TO deliveries_legacy;
ALTER TABLE deliveries_legacy RENAME CONSTRAINT deliveries_pkey TO deliveries_legacy_pkey;
ALTER TABLE deliveries_legacy
    RENAME CONSTRAINT deliveries_event_id_webhook_id_key TO deliveries_legacy_dedupe_key;
ALTER INDEX deliveries_webhook_idx RENAME TO deliveries_legacy_webhook_idx;
ALTER INDEX deliveries_company_idx RENAME TO deliveries_legacy_company_idx;
ALTER INDEX deliveries_due_idx RENAME TO deliveries_legacy_due_idx;
ALTER INDEX deliveries_parked_idx RENAME TO deliveries_legacy_parked_idx;
ALTER INDEX deliveries_alias_idx RENAME TO deliveries_legacy_alias_idx;
ALTER TABLE attempts RENAME TO attempts_legacy;
ALTER TABLE attempts_legacy RENAME CONSTRAINT attempts_pkey TO attempts_legacy_pkey;
ALTER INDEX attempts_webhook_idx RENAME TO attempts_legacy_webhook_idx;

ALTER TABLE events_legacy ADD COLUMN event_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE deliveries_legacy ADD COLUMN event_at timestamptz NOT NULL DEFAULT 'epoch';
-- A partition has its parent's primary key, which now includes `event_at`.
ALTER TABLE events_legacy DROP CONSTRAINT events_legacy_pkey;
ALTER TABLE deliveries_legacy DROP CONSTRAINT deliveries_legacy_pkey;

-- Attempt ids are a paging cursor only. PostgreSQL 15 has no identity columns on partitioned
-- tables: a sequence of its own carries on where the old identity stopped.
CREATE SEQUENCE attempts_id_seq_log;
DO $$
DECLARE
    last bigint;
BEGIN
    SELECT last_value INTO last FROM attempts_id_seq;
    ALTER TABLE attempts_legacy ALTER COLUMN id DROP IDENTITY;
    PERFORM setval('attempts_id_seq_log', greatest(last, 1));
END
$$;
ALTER SEQUENCE attempts_id_seq_log RENAME TO attempts_id_seq;

CREATE TABLE events (
    id          text COLLATE "C" NOT NULL,
    company_id  text NOT NULL,
    event_type  text NOT NULL,
    body        bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    event_at    timestamptz NOT NULL,
    PRIMARY KEY (id, event_at)
) PARTITION BY RANGE (event_at);

CREATE TABLE deliveries (
    id              uuid NOT NULL,
    event_id        text COLLATE "C" NOT NULL,
    webhook_id      uuid NOT NULL,
    company_id      text COLLATE "C" NOT NULL,
    event_type      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CONSTRAINT deliveries_status_check
                    CHECK (status IN ('pending', 'succeeded', 'retrying', 'failed')),
    attempt_count   integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    parked_until    timestamptz,
    alias_id        uuid,
    alias_offset    integer,
    event_at        timestamptz NOT NULL,
    PRIMARY KEY (id, event_at),
    -- The dedupe key.
    CONSTRAINT deliveries_dedupe_key UNIQUE (event_id, webhook_id, event_at)
) PARTITION BY RANGE (event_at);
CREATE INDEX deliveries_webhook_idx ON deliveries (webhook_id, id);
CREATE INDEX deliveries_company_idx ON deliveries (company_id, id);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_parked_idx ON deliveries (parked_until) WHERE parked_until IS NOT NULL;
CREATE INDEX deliveries_alias_idx ON deliveries (alias_id) WHERE alias_id IS NOT NULL;
-- A company's Failed deliveries, newest first (the dashboard's list, replays), without
-- reading its succeeded ones; also what retiring a partition keeps. Failed deliveries are a
-- small share, so is this index.
CREATE INDEX deliveries_failed_idx ON deliveries (company_id, id) WHERE status = 'failed';

CREATE TABLE attempts (
    id                      bigint NOT NULL DEFAULT nextval('attempts_id_seq'),
    delivery_id             uuid NOT NULL,
    webhook_id              uuid NOT NULL,
    attempt_number          integer NOT NULL,
    trigger                 text NOT NULL CONSTRAINT attempts_trigger_check
                            CHECK (trigger IN ('automatic', 'manual')),
    attempted_at            timestamptz NOT NULL,
    duration_ms             integer NOT NULL,
    request_headers         json NOT NULL,
    response_status         integer,
    response_headers        json,
    response_body           bytea,
    response_body_truncated boolean NOT NULL DEFAULT false,
    error_kind              text,
    error_message           text,
    PRIMARY KEY (delivery_id, attempt_number)
) PARTITION BY RANGE (delivery_id);
ALTER SEQUENCE attempts_id_seq OWNED BY attempts.id;
CREATE INDEX attempts_webhook_idx ON attempts (webhook_id, id);

-- Bodies are compressed with lz4 where the server has it (cheaper than pglz to write and to
-- read). PostgreSQL compresses a row's values only once the row passes about 2 kB, so this
-- changes large events and responses, not a 1 KiB event.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE attempts ALTER COLUMN response_body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: bodies are compressed with pglz';
END
$$;

DO $$
DECLARE
    bound timestamptz := date_trunc('milliseconds', now());
    bound_id uuid := (lpad(to_hex((extract(epoch FROM bound) * 1000)::bigint), 12, '0')
        || '00000000000000000000')::uuid;
BEGIN
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy
        FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    EXECUTE format('ALTER TABLE deliveries ATTACH PARTITION deliveries_legacy
        FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    EXECUTE format('ALTER TABLE attempts ATTACH PARTITION attempts_legacy
        FOR VALUES FROM (MINVALUE) TO (%L)', bound_id);
END
$$;
