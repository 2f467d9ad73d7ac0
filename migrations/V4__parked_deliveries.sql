-- A delivery whose endpoint is stuck (its attempts hang until the timeout) is parked here
-- instead of in a broker retry tier: one batched row write instead of a row write plus a
-- confirmed publish. The worker's sweeper publishes its job once parked_until passes.
-- NULL for every delivery that is not parked.
ALTER TABLE deliveries ADD COLUMN parked_until timestamptz;
CREATE INDEX deliveries_parked_idx ON deliveries (parked_until) WHERE parked_until IS NOT NULL;
