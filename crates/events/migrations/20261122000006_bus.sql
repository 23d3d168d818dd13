-- The log as a bus that readers can follow by position, and the cursor the RabbitMQ
-- publisher keeps.

-- Positions must become visible in order: a reader that has seen position 25 must never
-- later find a 20 committed behind its cursor. One relay per outbox was not enough for
-- that (relays of two outboxes could commit out of order), so the append itself is now
-- serialised by a transaction lock that is held until commit, after the moved events
-- are visible. The per-outbox try-lock still keeps two relays off the same outbox. The
-- relay notifies `till_log` so consumers and the publisher wake without polling.
CREATE OR REPLACE FUNCTION events.relay(outbox text, rows_max integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    moved integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events.outboxes WHERE name = outbox) THEN
        RAISE EXCEPTION 'unknown outbox %', outbox;
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('relay' || chr(31) || outbox, 0)) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('relay' || chr(31) || 'events.log', 0));
    EXECUTE format(
        'WITH batch AS (
             DELETE FROM %s WHERE position IN (SELECT position FROM %s ORDER BY position LIMIT $1)
             RETURNING position, id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data
         )
         INSERT INTO events.log (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
         SELECT id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data
           FROM batch ORDER BY position',
        outbox::regclass, outbox::regclass)
    USING rows_max;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM pg_notify('till_log', '');
    END IF;
    RETURN moved;
END
$$;

-- Claims a cursor for the rest of the caller's transaction and returns its position, or
-- NULL while another transaction holds it. The RabbitMQ publisher publishes the events
-- after the position, waits for the broker's confirms and advances the cursor before it
-- commits: two publishers never publish the same batch at once, and one that dies
-- before committing leaves the batch to be published again (at least once).
CREATE FUNCTION events.claim_cursor(consumer text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    claimed bigint;
BEGIN
    INSERT INTO events.consumers (name) VALUES (consumer) ON CONFLICT (name) DO NOTHING;
    SELECT position INTO claimed FROM events.consumers WHERE name = consumer FOR UPDATE SKIP LOCKED;
    RETURN claimed;
END
$$;

-- How far behind each cursor is: events after it, and the age of the oldest of them.
CREATE FUNCTION events.consumer_lag()
    RETURNS TABLE (consumer text, "position" bigint, behind bigint, oldest timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT c.name, c.position, count(l.position), min(l.occurred_at)
          FROM events.consumers c LEFT JOIN events.log l ON l.position > c.position
         GROUP BY c.name, c.position ORDER BY c.name
    $$;

REVOKE ALL ON FUNCTION events.claim_cursor(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.consumer_lag() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.claim_cursor(text) TO till_app;
GRANT EXECUTE ON FUNCTION events.consumer_lag() TO till_app;
