-- A webhook's own request headers, a JSON object sealed under the key ring like its signing
-- keys (they often carry the endpoint's credentials); NULL when it has none.
ALTER TABLE webhooks ADD COLUMN headers text;
