-- Workers cache each company's webhooks and drop the entry when this fires, so routing costs no
-- query per event yet sees every change at once. The payload is the company id.
CREATE FUNCTION tesoro_webhooks_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('tesoro_webhooks_changed', COALESCE(NEW.company_id, OLD.company_id));
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION tesoro_webhooks_changed();
