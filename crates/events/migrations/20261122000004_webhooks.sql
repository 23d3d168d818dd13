-- Merchant webhooks: endpoints, the deliveries of events to them, and every attempt.

CREATE TABLE events.webhook_endpoints (
    id                   uuid        PRIMARY KEY,
    business_id          uuid        NOT NULL,
    url                  text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description          text,
    enabled_events       text[]      NOT NULL CHECK (cardinality(enabled_events) >= 1),
    status               text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    -- The signing secret, and during a rotation's grace period the previous one; both
    -- sign every delivery until the previous one expires.
    secret               text        NOT NULL,
    previous_secret      text,
    previous_expires_at  timestamptz,
    failing_since        timestamptz,
    version              integer     NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_business_newest_first ON events.webhook_endpoints (business_id, id DESC);

-- One event to deliver to one endpoint. `generation` is 0 for the first fan-out and
-- grows with each replay, so a replay delivers again without losing the history.
CREATE TABLE events.webhook_deliveries (
    id               uuid        PRIMARY KEY,
    business_id      uuid        NOT NULL,
    endpoint_id      uuid        NOT NULL REFERENCES events.webhook_endpoints (id) ON DELETE CASCADE,
    event_id         uuid        NOT NULL,
    event_position   bigint      NOT NULL,
    resource_id      text        NOT NULL,
    generation       integer     NOT NULL DEFAULT 0,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (endpoint_id, event_id, generation)
);
CREATE INDEX webhook_deliveries_due ON events.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON events.webhook_deliveries (endpoint_id, resource_id, event_position) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_newest_first ON events.webhook_deliveries (endpoint_id, created_at DESC, id DESC);

CREATE TABLE events.webhook_attempts (
    delivery_id  uuid        NOT NULL REFERENCES events.webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    business_id  uuid        NOT NULL,
    status_code  integer,
    latency_ms   integer     NOT NULL,
    error        text,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);

-- Consumers of the event log and how far each has read (the embedded bus's cursors).
CREATE TABLE events.consumers (
    name     text   PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);
INSERT INTO events.consumers (name) VALUES ('webhooks');

ALTER TABLE events.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.webhook_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY webhook_endpoints_tenant ON events.webhook_endpoints
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY webhook_deliveries_tenant ON events.webhook_deliveries
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY webhook_attempts_tenant ON events.webhook_attempts
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT SELECT, INSERT, UPDATE, DELETE ON events.webhook_endpoints TO till_app;
GRANT SELECT, INSERT ON events.webhook_deliveries TO till_app;
GRANT SELECT ON events.webhook_attempts TO till_app;

-- The fan-out consumer and the delivery worker work across businesses; these SECURITY
-- DEFINER functions are their only doors.

-- Turns new log events into deliveries for every enabled endpoint that wants them, and
-- advances the consumer's cursor in the same transaction: each event fans out once.
-- Returns how many events it consumed (rows_max means: call again).
CREATE FUNCTION events.fan_out_webhooks(rows_max integer) RETURNS integer
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
    INSERT INTO events.webhook_deliveries (id, business_id, endpoint_id, event_id, event_position, resource_id)
    SELECT gen_random_uuid(), l.business_id, e.id, l.id, l.position, l.resource_id
      FROM events.log l
      JOIN events.webhook_endpoints e
        ON e.business_id = l.business_id AND e.status = 'enabled'
       AND ('*' = ANY (e.enabled_events) OR l.type = ANY (e.enabled_events))
     WHERE l.position > cursor_position AND l.position <= last_position
    ON CONFLICT (endpoint_id, event_id, generation) DO NOTHING;
    UPDATE events.consumers SET position = last_position WHERE name = 'webhooks';
    RETURN consumed;
END
$$;

-- Claims due deliveries for a worker: pending, due, and not behind an earlier pending
-- delivery of the same resource to the same endpoint (per-resource order). The claim
-- pushes next_attempt_at out by the lease, so a worker that dies mid-send leaves the
-- delivery to be retried after the lease.
CREATE FUNCTION events.claim_webhook_deliveries(rows_max integer, lease interval)
    RETURNS TABLE (delivery_id uuid, business_id uuid, endpoint_id uuid, url text, secret text, previous_secret text,
                   event_id uuid, attempts integer, created_at timestamptz, body jsonb)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT d.id FROM events.webhook_deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (
               SELECT 1 FROM events.webhook_deliveries earlier
                WHERE earlier.endpoint_id = d.endpoint_id AND earlier.resource_id = d.resource_id
                  AND earlier.status = 'pending' AND earlier.event_position < d.event_position)
         ORDER BY d.next_attempt_at
         LIMIT rows_max
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE events.webhook_deliveries d SET next_attempt_at = now() + lease
          FROM due WHERE d.id = due.id
        RETURNING d.*
    )
    SELECT c.id, c.business_id, c.endpoint_id, e.url, e.secret,
           CASE WHEN e.previous_expires_at > now() THEN e.previous_secret END,
           c.event_id, c.attempts, c.created_at,
           jsonb_build_object('id', 'evt_' || replace(l.id::text, '-', ''), 'type', l.type, 'version', l.version,
                              'business_id', 'biz_' || replace(l.business_id::text, '-', ''),
                              'resource_id', l.resource_id, 'sequence', l.sequence,
                              'occurred_at', to_char(l.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                              'request_id', l.request_id, 'data', l.data)
      FROM claimed c
      JOIN events.webhook_endpoints e ON e.id = c.endpoint_id
      JOIN events.log l ON l.id = c.event_id
     WHERE e.status = 'enabled';
END
$$;

-- Records one attempt and its consequence: success, a retry at next_attempt_at, or
-- failure (next_attempt_at NULL). Also tracks how long the endpoint has been failing.
CREATE FUNCTION events.record_webhook_attempt(delivery uuid, succeeded boolean, status_code integer, latency_ms integer,
                                              error text, next_attempt_at timestamptz)
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
       SET failing_since = CASE WHEN succeeded THEN NULL ELSE coalesce(e.failing_since, now()) END
     WHERE e.id = d.endpoint_id;
END
$$;

REVOKE ALL ON FUNCTION events.fan_out_webhooks(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.claim_webhook_deliveries(integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.record_webhook_attempt(uuid, boolean, integer, integer, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.fan_out_webhooks(integer) TO till_app;
GRANT EXECUTE ON FUNCTION events.claim_webhook_deliveries(integer, interval) TO till_app;
GRANT EXECUTE ON FUNCTION events.record_webhook_attempt(uuid, boolean, integer, integer, text, timestamptz) TO till_app;

-- The events service's own outbox (for webhook_endpoint.* events).
SELECT events.create_outbox('events');

-- Disables endpoints that have failed continuously for longer than `after`, and says so
-- with a webhook_endpoint.disabled event (its sequence is the endpoint's new version).
CREATE FUNCTION events.disable_failing_endpoints(after interval) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    disabled integer;
BEGIN
    WITH gone AS (
        UPDATE events.webhook_endpoints e
           SET status = 'disabled', version = e.version + 1, updated_at = now()
         WHERE e.status = 'enabled' AND e.failing_since < now() - after
        RETURNING e.*
    )
    INSERT INTO events.outbox (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
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
REVOKE ALL ON FUNCTION events.disable_failing_endpoints(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.disable_failing_endpoints(interval) TO till_app;
