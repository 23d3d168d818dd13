-- The webhooks service takes over its data from the events service, which held it
-- while both were one crate (docs/DECISIONS.md, "Webhooks are a service of their own").
-- The tables move with their rows, indexes, constraints, row-level security policies
-- and grants; the functions that worked on them are dropped from `events` and made
-- again here, unchanged but for their names and two doors:
-- - the fan-out's cursor is read and advanced through the events service's functions
--   (`events.claim_cursor`, `events.advance_consumer`), no longer by writing
--   `events.consumers`; a second fan-out running at once now returns at once instead of
--   waiting for the first (which consumes the same events);
-- - `webhook_endpoint.*` events go to this service's own outbox (`webhooks.outbox`).
--   Events already waiting in `events.outbox` are still relayed from there.
-- The event log itself (`events.log`) is read as before: it is the bus, published for
-- consumers to read.

ALTER TABLE events.webhook_endpoints SET SCHEMA webhooks;
ALTER TABLE webhooks.webhook_endpoints RENAME TO endpoints;
ALTER TABLE events.webhook_deliveries SET SCHEMA webhooks;
ALTER TABLE webhooks.webhook_deliveries RENAME TO deliveries;
ALTER TABLE events.webhook_attempts SET SCHEMA webhooks;
ALTER TABLE webhooks.webhook_attempts RENAME TO attempts;
GRANT USAGE ON SCHEMA webhooks TO till_app;

DROP FUNCTION events.fan_out_webhooks(integer, integer, text[], text[]);
DROP FUNCTION events.claim_webhook_deliveries(integer, interval, integer, integer, integer);
DROP FUNCTION events.record_webhook_attempt(uuid, boolean, integer, integer, text, timestamptz, integer, interval, interval);
DROP FUNCTION events.disable_failing_endpoints(interval);
DROP FUNCTION events.role_rank(text);

SELECT events.create_outbox('webhooks');

-- Roles in order of privilege, as till_http::auth::Role.
CREATE FUNCTION webhooks.role_rank(role text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT array_position(ARRAY['viewer', 'finance', 'admin', 'owner'], role) $$;

-- Turns new log events into deliveries for every enabled endpoint that wants them and
-- whose creator's role may read them (`restricted_types` need `restricted_roles`; every
-- other type, a viewer's), and advances the cursor in the same transaction. An endpoint
-- already holding `pending_max` waiting deliveries gets the rest recorded as failed, not
-- attempted. Returns how many events it consumed (rows_max means: call again).
CREATE FUNCTION webhooks.fan_out(rows_max integer, pending_max integer, restricted_types text[],
                                        restricted_roles text[])
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cursor_position bigint;
    last_position bigint;
    consumed integer;
BEGIN
    -- The cursor, through the events service's door: held to the end of this transaction,
    -- or NULL while another fan-out holds it (that one consumes these events).
    cursor_position := events.claim_cursor('webhooks');
    IF cursor_position IS NULL THEN
        RETURN 0;
    END IF;
    SELECT max(position), count(*) INTO last_position, consumed
      FROM (SELECT position FROM events.log WHERE position > cursor_position ORDER BY position LIMIT rows_max) batch;
    IF last_position IS NULL THEN
        RETURN 0;
    END IF;
    WITH restricted AS (
        SELECT t.type, webhooks.role_rank(t.role) AS rank FROM unnest(restricted_types, restricted_roles) AS t(type, role)
    ), wanted AS (
        SELECT l.business_id, e.id AS endpoint_id, l.id AS event_id, l.position, l.resource_id,
               row_number() OVER (PARTITION BY e.id ORDER BY l.position) AS nth
          FROM events.log l
          JOIN webhooks.endpoints e
            ON e.business_id = l.business_id AND e.status = 'enabled'
           AND ('*' = ANY (e.enabled_events) OR l.type = ANY (e.enabled_events))
          LEFT JOIN restricted r ON r.type = l.type
         WHERE l.position > cursor_position AND l.position <= last_position
           AND webhooks.role_rank(e.reader_role) >= coalesce(r.rank, 1)
    ), waiting AS (
        -- Counted once per endpoint, and never past the limit.
        SELECT w.endpoint_id,
               (SELECT count(*) FROM (SELECT 1 FROM webhooks.deliveries d
                                       WHERE d.endpoint_id = w.endpoint_id AND d.status = 'pending'
                                       LIMIT pending_max) counted) AS n
          FROM (SELECT DISTINCT endpoint_id FROM wanted) w
    )
    INSERT INTO webhooks.deliveries (id, business_id, endpoint_id, event_id, event_position, resource_id,
                                           status, last_error, finished_at)
    SELECT gen_random_uuid(), w.business_id, w.endpoint_id, w.event_id, w.position, w.resource_id,
           CASE WHEN n.n + w.nth > pending_max THEN 'failed' ELSE 'pending' END,
           CASE WHEN n.n + w.nth > pending_max
                THEN 'not attempted: the endpoint already had ' || pending_max || ' deliveries waiting' END,
           CASE WHEN n.n + w.nth > pending_max THEN now() END
      FROM wanted w JOIN waiting n ON n.endpoint_id = w.endpoint_id
    ON CONFLICT (endpoint_id, event_id, generation) DO NOTHING;
    PERFORM events.advance_consumer('webhooks', last_position);
    RETURN consumed;
END
$$;

-- Claims up to rows_max due deliveries, fairly (events' migration
-- 20261201000002_webhooks_fair_and_sealed.sql says how), and leases them: a worker that
-- dies mid-send leaves the delivery to be claimed again when the lease ends. A delivery
-- is never claimed behind an earlier pending delivery of the same resource to the same
-- endpoint (per-resource order).
CREATE FUNCTION webhooks.claim_deliveries(rows_max integer, lease interval, endpoint_in_flight_max integer,
                                                business_in_flight_max integer, breaker_failures integer)
    RETURNS TABLE (delivery_id uuid, business_id uuid, endpoint_id uuid, url text, secret text, secret_sealed bytea,
                   previous_secret text, previous_secret_sealed bytea, event_id uuid, attempts integer,
                   created_at timestamptz, body jsonb)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE active(endpoint) AS (
        -- The endpoints with pending deliveries, one index probe each (a loose index scan):
        -- however many deliveries wait, the claim looks at endpoints, not at deliveries.
        (SELECT d.endpoint_id FROM webhooks.deliveries d WHERE d.status = 'pending'
          ORDER BY d.endpoint_id LIMIT 1)
        UNION ALL
        SELECT (SELECT d.endpoint_id FROM webhooks.deliveries d
                 WHERE d.status = 'pending' AND d.endpoint_id > a.endpoint ORDER BY d.endpoint_id LIMIT 1)
          FROM active a WHERE a.endpoint IS NOT NULL
    ), leased AS (
        SELECT d.endpoint_id AS endpoint, d.business_id AS business, count(*) AS n
          FROM webhooks.deliveries d WHERE d.leased_until > now()
         GROUP BY d.endpoint_id, d.business_id
    ), business_load AS (
        SELECT l.business, sum(l.n) AS n FROM leased l GROUP BY l.business
    ), ready AS (
        SELECT e.id AS endpoint, e.last_claimed_at,
               row_number() OVER (PARTITION BY e.business_id ORDER BY e.last_claimed_at NULLS FIRST, e.id) AS turn,
               coalesce(b.n, 0) AS business_in_flight
          FROM active a
          JOIN webhooks.endpoints e ON e.id = a.endpoint
          LEFT JOIN leased l ON l.endpoint = e.id
          LEFT JOIN business_load b ON b.business = e.business_id
         WHERE e.status = 'enabled'
           AND (e.paused_until IS NULL OR e.paused_until <= now())
           -- A half-open breaker lets one probe through at a time.
           AND coalesce(l.n, 0) < CASE WHEN e.consecutive_failures >= breaker_failures THEN 1
                                       ELSE endpoint_in_flight_max END
    ), chosen AS (
        SELECT due.id AS delivery, r.endpoint
          FROM ready r
          CROSS JOIN LATERAL (
              SELECT d.id FROM webhooks.deliveries d
               WHERE d.endpoint_id = r.endpoint AND d.status = 'pending' AND d.next_attempt_at <= now()
                 AND (d.leased_until IS NULL OR d.leased_until <= now())
                 AND NOT EXISTS (
                     SELECT 1 FROM webhooks.deliveries earlier
                      WHERE earlier.endpoint_id = d.endpoint_id AND earlier.resource_id = d.resource_id
                        AND earlier.status = 'pending' AND earlier.event_position < d.event_position)
               ORDER BY d.next_attempt_at
               LIMIT 1
               FOR UPDATE SKIP LOCKED
          ) due
         WHERE r.turn <= business_in_flight_max - r.business_in_flight
         ORDER BY r.turn, r.last_claimed_at NULLS FIRST
         LIMIT rows_max
    ), claimed AS (
        UPDATE webhooks.deliveries d SET leased_until = now() + lease
          FROM chosen c WHERE d.id = c.delivery
        RETURNING d.*
    ), served AS (
        UPDATE webhooks.endpoints e SET last_claimed_at = now()
          FROM chosen c WHERE e.id = c.endpoint
    )
    SELECT c.id, c.business_id, c.endpoint_id, e.url, e.secret, e.secret_sealed,
           CASE WHEN e.previous_expires_at > now() THEN e.previous_secret END,
           CASE WHEN e.previous_expires_at > now() THEN e.previous_secret_sealed END,
           c.event_id, c.attempts, c.created_at,
           jsonb_build_object('id', 'evt_' || replace(l.id::text, '-', ''), 'type', l.type, 'version', l.version,
                              'business_id', 'biz_' || replace(l.business_id::text, '-', ''),
                              'resource_id', l.resource_id, 'sequence', l.sequence,
                              'occurred_at', to_char(l.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                              'request_id', l.request_id, 'data', l.data)
      FROM claimed c
      JOIN webhooks.endpoints e ON e.id = c.endpoint_id
      JOIN events.log l ON l.id = c.event_id;
END
$$;

-- Records one attempt and its consequences: success, a retry at next_attempt_at, or
-- failure (next_attempt_at NULL); the lease ends. The endpoint's breaker counts
-- consecutive failed attempts: from `breaker_failures` on, each failure pauses the
-- endpoint for pause_base doubling per further failure up to pause_cap, with jitter
-- (half to all of it); a success closes it. Also tracks how long the endpoint has
-- been failing (for disabling it after days).
CREATE FUNCTION webhooks.record_attempt(delivery uuid, succeeded boolean, status_code integer, latency_ms integer,
                                              error text, next_attempt_at timestamptz, breaker_failures integer,
                                              pause_base interval, pause_cap interval)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d webhooks.deliveries;
BEGIN
    UPDATE webhooks.deliveries w
       SET attempts = w.attempts + 1,
           status = CASE WHEN succeeded THEN 'succeeded' WHEN record_attempt.next_attempt_at IS NULL THEN 'failed' ELSE 'pending' END,
           next_attempt_at = coalesce(record_attempt.next_attempt_at, w.next_attempt_at),
           leased_until = NULL,
           last_status_code = status_code, last_error = error,
           finished_at = CASE WHEN succeeded OR record_attempt.next_attempt_at IS NULL THEN now() END
     WHERE w.id = delivery
    RETURNING * INTO d;
    IF NOT FOUND THEN
        RETURN;  -- the endpoint (and with it the delivery) was deleted mid-send
    END IF;
    INSERT INTO webhooks.attempts (delivery_id, attempt, business_id, status_code, latency_ms, error)
    VALUES (delivery, d.attempts, d.business_id, status_code, latency_ms, error);
    UPDATE webhooks.endpoints e
       SET failing_since = CASE WHEN succeeded THEN NULL ELSE coalesce(e.failing_since, now()) END,
           consecutive_failures = CASE WHEN succeeded THEN 0 ELSE e.consecutive_failures + 1 END,
           paused_until = CASE
               WHEN succeeded THEN NULL
               WHEN e.consecutive_failures + 1 >= breaker_failures THEN
                   now() + least(pause_cap, pause_base * power(2, least(e.consecutive_failures + 1 - breaker_failures, 30)))
                           * (0.5 + random() / 2)
               ELSE e.paused_until END
     WHERE e.id = d.endpoint_id;
END
$$;

-- Disables endpoints that have failed continuously for longer than `after`, and says so
-- with a webhook_endpoint.disabled event (its sequence is the endpoint's new version).
CREATE FUNCTION webhooks.disable_failing_endpoints(after interval) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    disabled integer;
BEGIN
    WITH gone AS (
        UPDATE webhooks.endpoints e
           SET status = 'disabled', version = e.version + 1, updated_at = now()
         WHERE e.status = 'enabled' AND e.failing_since < now() - after
        RETURNING e.*
    )
    INSERT INTO webhooks.outbox (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
    SELECT gen_random_uuid(), 'webhook_endpoint.disabled', 1, g.business_id,
           'we_' || replace(g.id::text, '-', ''), g.version, now(), 'webhook-worker',
           jsonb_build_object('id', 'we_' || replace(g.id::text, '-', ''), 'url', g.url, 'description', g.description,
                              'enabled_events', to_jsonb(g.enabled_events), 'status', g.status, 'version', g.version,
                              'failing_since', g.failing_since)
      FROM gone g;
    GET DIAGNOSTICS disabled = ROW_COUNT;
    RETURN disabled;
END
$$;

REVOKE ALL ON FUNCTION webhooks.fan_out(integer, integer, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.claim_deliveries(integer, interval, integer, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.record_attempt(uuid, boolean, integer, integer, text, timestamptz, integer,
                                               interval, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.disable_failing_endpoints(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.fan_out(integer, integer, text[], text[]) TO till_app;
GRANT EXECUTE ON FUNCTION webhooks.claim_deliveries(integer, interval, integer, integer, integer) TO till_app;
GRANT EXECUTE ON FUNCTION webhooks.record_attempt(uuid, boolean, integer, integer, text, timestamptz, integer,
                                                  interval, interval) TO till_app;
GRANT EXECUTE ON FUNCTION webhooks.disable_failing_endpoints(interval) TO till_app;
