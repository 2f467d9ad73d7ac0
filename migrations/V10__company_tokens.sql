-- API tokens scoped to one company: what a tenant's dashboard or integration uses instead of
-- the admin token. Only a SHA-256 hash of each token is kept (tokens are 256 random bits, so
-- a plain hash is as good as a slow one); the token itself is shown once, when issued.
CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    company_id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX api_tokens_company_idx ON api_tokens (company_id, id);
