-- Idempotent consumers. A consumer records each event it handles here, in the same
-- transaction as the event's effect; a duplicate (a redelivery, a replay, a second
-- relay) finds the row and is skipped. The primary key makes "at most once" a fact of
-- the database, also for two copies handled at the same moment.
CREATE TABLE events.inbox (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    business_id uuid        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
ALTER TABLE events.inbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY inbox_tenant ON events.inbox
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT ON events.inbox TO till_app;

-- The embedded bus for consumers: the log after a position, across businesses (each
-- event is then handled in its own business's transaction), and the consumers' cursors.
CREATE FUNCTION events.read_log(after bigint, rows_max integer)
    RETURNS TABLE ("position" bigint, id uuid, type text, version integer, business_id uuid, resource_id text,
                   sequence bigint, occurred_at timestamptz, request_id text, data jsonb)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT l.position, l.id, l.type, l.version, l.business_id, l.resource_id, l.sequence, l.occurred_at,
               l.request_id, l.data
          FROM events.log l WHERE l.position > after ORDER BY l.position LIMIT rows_max
    $$;

CREATE FUNCTION events.consumer_position(consumer text) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        INSERT INTO events.consumers (name) VALUES (consumer) ON CONFLICT (name) DO NOTHING;
        SELECT position FROM events.consumers WHERE name = consumer;
    $$;

-- Cursors only move forward, so a slow, stale advance cannot rewind a consumer.
CREATE FUNCTION events.advance_consumer(consumer text, to_position bigint) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        INSERT INTO events.consumers (name, position) VALUES (consumer, to_position)
        ON CONFLICT (name) DO UPDATE SET position = greatest(events.consumers.position, excluded.position);
    $$;

REVOKE ALL ON FUNCTION events.read_log(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.consumer_position(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.advance_consumer(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.read_log(bigint, integer) TO till_app;
GRANT EXECUTE ON FUNCTION events.consumer_position(text) TO till_app;
GRANT EXECUTE ON FUNCTION events.advance_consumer(text, bigint) TO till_app;
