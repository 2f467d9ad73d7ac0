-- Subscriptions. `events` holds exact types ("deal.won") and category wildcards ("deal.*").
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    company_id  text NOT NULL,
    name        text NOT NULL,
    url         text NOT NULL,
    events      text[] NOT NULL CHECK (cardinality(events) > 0),
    secret      text,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_company_idx ON webhooks (company_id);

-- Every event that matched at least one webhook, with the exact bytes subscribers receive.
-- Attempts reference this body instead of copying it: it is identical on every attempt.
CREATE TABLE events (
    id          text PRIMARY KEY,
    company_id  text NOT NULL,
    event_type  text NOT NULL,
    body        bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- One event to one webhook. UNIQUE (event_id, webhook_id) is the dedupe key: a redelivered
-- event never creates a second delivery, and `attempt_count` tells a stale job from a live one.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    event_id        text NOT NULL REFERENCES events (id),
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    company_id      text NOT NULL,
    event_type      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'retrying', 'failed')),
    attempt_count   integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, webhook_id)
);
CREATE INDEX deliveries_webhook_idx ON deliveries (webhook_id, id DESC);
CREATE INDEX deliveries_company_idx ON deliveries (company_id, id DESC);

-- The delivery log: one row per HTTP attempt.
CREATE TABLE attempts (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id             uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    webhook_id              uuid NOT NULL,
    attempt_number          integer NOT NULL,
    trigger                 text NOT NULL CHECK (trigger IN ('automatic', 'manual')),
    attempted_at            timestamptz NOT NULL,
    duration_ms             integer NOT NULL,
    request_headers         jsonb NOT NULL,
    response_status         integer,
    response_headers        jsonb,
    response_body           bytea,
    response_body_truncated boolean NOT NULL DEFAULT false,
    error_kind              text,
    error_message           text,
    UNIQUE (delivery_id, attempt_number)
);
CREATE INDEX attempts_webhook_idx ON attempts (webhook_id, id DESC);
