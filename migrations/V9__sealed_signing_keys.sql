-- Webhook signing keys sealed (encrypted) under `security.secret_keys`: the current key
-- (a `whsec_` secret or a `whsk_` Ed25519 key), and the one a rotation replaced, which signs
-- beside it until `secret_rotation_ends_at`. The worker seals what the plain `secret` column
-- held at its next start and empties that column; it stays only so an upgrade can read it.
-- Adding nullable columns rewrites nothing.
ALTER TABLE webhooks
    ADD COLUMN signing_key text,
    ADD COLUMN previous_signing_key text,
    ADD COLUMN secret_rotation_ends_at timestamptz;
