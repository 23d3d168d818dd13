-- Webhooks that no tenant can starve, whose secrets never rest in plain text, and that
-- carry only what the endpoint's creator may read (docs/DECISIONS.md, "Webhook delivery
-- is fair across businesses").
--
-- Before this, deliveries were claimed oldest-due first across every business, endpoints
-- and replays were unbounded, and the worker waited for a whole claim to finish: one
-- business with 84 endpoints on a black-holed host kept another business's delivery
-- unattempted for minutes (35 hours projected). Now:
-- - deliveries are leased (`leased_until`) rather than pushed into the future, so the
--   deliveries in flight are known, per endpoint and per business;
-- - a claim takes at most one delivery per endpoint, from endpoints whose business is
--   under its in-flight limit and which are themselves under theirs, taking each
--   business's least recently served endpoint first and, among those, the endpoint
--   served longest ago: round robin over businesses, then over their endpoints;
-- - an endpoint that keeps failing opens its breaker (`paused_until`): nothing is sent to
--   it until the pause ends, then a single probe; a success closes it;
-- - a fan-out beyond an endpoint's limit of waiting deliveries records the delivery as
--   failed (not attempted, replayable later) instead of queueing without end.

ALTER TABLE events.webhook_endpoints
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN last_claimed_at timestamptz,
    ADD COLUMN last_replay_at timestamptz,
    -- The role of the credential that created the endpoint: it receives only the events
    -- that role may read. Endpoints made before this were made by admins or owners.
    ADD COLUMN reader_role text NOT NULL DEFAULT 'admin'
        CHECK (reader_role IN ('viewer', 'finance', 'admin', 'owner')),
    -- Signing secrets sealed with the server's keyring (till_kit::sealing), bound to the
    -- endpoint's id. The plain columns remain for rows written before this (and by an
    -- older instance during a rolling upgrade); `till up` seals those when it starts.
    ADD COLUMN secret_sealed bytea,
    ADD COLUMN previous_secret_sealed bytea,
    ALTER COLUMN secret DROP NOT NULL,
    ADD CONSTRAINT webhook_endpoints_secret_present CHECK (secret IS NOT NULL OR secret_sealed IS NOT NULL);

ALTER TABLE events.webhook_deliveries ADD COLUMN leased_until timestamptz;
CREATE INDEX webhook_deliveries_endpoint_due ON events.webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON events.webhook_deliveries (leased_until)
    WHERE leased_until IS NOT NULL;

-- Roles in order of privilege, as till_http::auth::Role.
CREATE FUNCTION events.role_rank(role text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT array_position(ARRAY['viewer', 'finance', 'admin', 'owner'], role) $$;

-- Turns new log events into deliveries for every enabled endpoint that wants them and
-- whose creator's role may read them (`restricted_types` need `restricted_roles`; every
-- other type, a viewer's), and advances the cursor in the same transaction. An endpoint
-- already holding `pending_max` waiting deliveries gets the rest recorded as failed, not
-- attempted. Returns how many events it consumed (rows_max means: call again).
DROP FUNCTION events.fan_out_webhooks(integer);
CREATE FUNCTION events.fan_out_webhooks(rows_max integer, pending_max integer, restricted_types text[],
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
    SELECT position INTO cursor_position FROM events.consumers WHERE name = 'webhooks' FOR UPDATE;
    SELECT max(position), count(*) INTO last_position, consumed
      FROM (SELECT position FROM events.log WHERE position > cursor_position ORDER BY position LIMIT rows_max) batch;
    IF last_position IS NULL THEN
        RETURN 0;
    END IF;
    WITH restricted AS (
        SELECT t.type, events.role_rank(t.role) AS rank FROM unnest(restricted_types, restricted_roles) AS t(type, role)
    ), wanted AS (
        SELECT l.business_id, e.id AS endpoint_id, l.id AS event_id, l.position, l.resource_id,
               row_number() OVER (PARTITION BY e.id ORDER BY l.position) AS nth
          FROM events.log l
          JOIN events.webhook_endpoints e
            ON e.business_id = l.business_id AND e.status = 'enabled'
           AND ('*' = ANY (e.enabled_events) OR l.type = ANY (e.enabled_events))
          LEFT JOIN restricted r ON r.type = l.type
         WHERE l.position > cursor_position AND l.position <= last_position
           AND events.role_rank(e.reader_role) >= coalesce(r.rank, 1)
    ), waiting AS (
        -- Counted once per endpoint, and never past the limit.
        SELECT w.endpoint_id,
               (SELECT count(*) FROM (SELECT 1 FROM events.webhook_deliveries d
                                       WHERE d.endpoint_id = w.endpoint_id AND d.status = 'pending'
                                       LIMIT pending_max) counted) AS n
          FROM (SELECT DISTINCT endpoint_id FROM wanted) w
    )
    INSERT INTO events.webhook_deliveries (id, business_id, endpoint_id, event_id, event_position, resource_id,
                                           status, last_error, finished_at)
    SELECT gen_random_uuid(), w.business_id, w.endpoint_id, w.event_id, w.position, w.resource_id,
           CASE WHEN n.n + w.nth > pending_max THEN 'failed' ELSE 'pending' END,
           CASE WHEN n.n + w.nth > pending_max
                THEN 'not attempted: the endpoint already had ' || pending_max || ' deliveries waiting' END,
           CASE WHEN n.n + w.nth > pending_max THEN now() END
      FROM wanted w JOIN waiting n ON n.endpoint_id = w.endpoint_id
    ON CONFLICT (endpoint_id, event_id, generation) DO NOTHING;
    UPDATE events.consumers SET position = last_position WHERE name = 'webhooks';
    RETURN consumed;
END
$$;

-- Claims up to rows_max due deliveries, fairly (see the top of this file), and leases
-- them: a worker that dies mid-send leaves the delivery to be claimed again when the
-- lease ends. A delivery is never claimed behind an earlier pending delivery of the
-- same resource to the same endpoint (per-resource order).
DROP FUNCTION events.claim_webhook_deliveries(integer, interval);
CREATE FUNCTION events.claim_webhook_deliveries(rows_max integer, lease interval, endpoint_in_flight_max integer,
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
        (SELECT d.endpoint_id FROM events.webhook_deliveries d WHERE d.status = 'pending'
          ORDER BY d.endpoint_id LIMIT 1)
        UNION ALL
        SELECT (SELECT d.endpoint_id FROM events.webhook_deliveries d
                 WHERE d.status = 'pending' AND d.endpoint_id > a.endpoint ORDER BY d.endpoint_id LIMIT 1)
          FROM active a WHERE a.endpoint IS NOT NULL
    ), leased AS (
        SELECT d.endpoint_id AS endpoint, d.business_id AS business, count(*) AS n
          FROM events.webhook_deliveries d WHERE d.leased_until > now()
         GROUP BY d.endpoint_id, d.business_id
    ), business_load AS (
        SELECT l.business, sum(l.n) AS n FROM leased l GROUP BY l.business
    ), ready AS (
        SELECT e.id AS endpoint, e.last_claimed_at,
               row_number() OVER (PARTITION BY e.business_id ORDER BY e.last_claimed_at NULLS FIRST, e.id) AS turn,
               coalesce(b.n, 0) AS business_in_flight
          FROM active a
          JOIN events.webhook_endpoints e ON e.id = a.endpoint
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
              SELECT d.id FROM events.webhook_deliveries d
               WHERE d.endpoint_id = r.endpoint AND d.status = 'pending' AND d.next_attempt_at <= now()
                 AND (d.leased_until IS NULL OR d.leased_until <= now())
                 AND NOT EXISTS (
                     SELECT 1 FROM events.webhook_deliveries earlier
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
        UPDATE events.webhook_deliveries d SET leased_until = now() + lease
          FROM chosen c WHERE d.id = c.delivery
        RETURNING d.*
    ), served AS (
        UPDATE events.webhook_endpoints e SET last_claimed_at = now()
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
      JOIN events.webhook_endpoints e ON e.id = c.endpoint_id
      JOIN events.log l ON l.id = c.event_id;
END
$$;

-- Records one attempt and its consequences: success, a retry at next_attempt_at, or
-- failure (next_attempt_at NULL); the lease ends. The endpoint's breaker counts
-- consecutive failed attempts: from `breaker_failures` on, each failure pauses the
-- endpoint for pause_base doubling per further failure up to pause_cap, with jitter
-- (half to all of it); a success closes it. Also tracks how long the endpoint has
-- been failing (for disabling it after days).
DROP FUNCTION events.record_webhook_attempt(uuid, boolean, integer, integer, text, timestamptz);
CREATE FUNCTION events.record_webhook_attempt(delivery uuid, succeeded boolean, status_code integer, latency_ms integer,
                                              error text, next_attempt_at timestamptz, breaker_failures integer,
                                              pause_base interval, pause_cap interval)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d events.webhook_deliveries;
BEGIN
    UPDATE events.webhook_deliveries w
       SET attempts = w.attempts + 1,
           status = CASE WHEN succeeded THEN 'succeeded' WHEN record_webhook_attempt.next_attempt_at IS NULL THEN 'failed' ELSE 'pending' END,
           next_attempt_at = coalesce(record_webhook_attempt.next_attempt_at, w.next_attempt_at),
           leased_until = NULL,
           last_status_code = status_code, last_error = error,
           finished_at = CASE WHEN succeeded OR record_webhook_attempt.next_attempt_at IS NULL THEN now() END
     WHERE w.id = delivery
    RETURNING * INTO d;
    IF NOT FOUND THEN
        RETURN;  -- the endpoint (and with it the delivery) was deleted mid-send
    END IF;
    INSERT INTO events.webhook_attempts (delivery_id, attempt, business_id, status_code, latency_ms, error)
    VALUES (delivery, d.attempts, d.business_id, status_code, latency_ms, error);
    UPDATE events.webhook_endpoints e
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

REVOKE ALL ON FUNCTION events.fan_out_webhooks(integer, integer, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.claim_webhook_deliveries(integer, interval, integer, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.record_webhook_attempt(uuid, boolean, integer, integer, text, timestamptz, integer,
                                                     interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.fan_out_webhooks(integer, integer, text[], text[]) TO till_app;
GRANT EXECUTE ON FUNCTION events.claim_webhook_deliveries(integer, interval, integer, integer, integer) TO till_app;
GRANT EXECUTE ON FUNCTION events.record_webhook_attempt(uuid, boolean, integer, integer, text, timestamptz, integer,
                                                        interval, interval) TO till_app;
