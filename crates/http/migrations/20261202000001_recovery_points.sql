-- Requests that call an outside party: atomic phases with recovery points
-- (`till_http::recovery`, ARCHITECTURE.md "A request that calls an outside party").
--
-- Such a request never holds a transaction across the call. Each phase is a transaction
-- of its own that commits its effects with the name of the next recovery point and what
-- resuming from there needs (the intent's id, the outside party's idempotency key). A
-- row lives while its request is unfinished; the request that finishes it stores its
-- response in `api.idempotency_keys` and deletes the row in one transaction.
--
-- A request holds the row by a lease (a token and a deadline) rather than a lock, since
-- it spans several transactions: a retry of the same key while the lease runs is 409
-- `idempotency_key_in_use`; once it has run out (the process died, or the request hung
-- past it), a retry or the recovery job takes a new lease and resumes from the point.
-- A phase commits only under the lease it began with, so a request whose lease was taken
-- over cannot move the row any more.
CREATE TABLE api.recovery_points (
    scope          text        NOT NULL,
    principal      text        NOT NULL,
    principal_role text,
    key            text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method         text        NOT NULL,
    path           text        NOT NULL,
    -- The route's template (`/v1/payment_intents/{id}/capture`), which names what resumes it.
    route          text        NOT NULL,
    fingerprint    bytea       NOT NULL,
    -- The request as first sent, so that the recovery job can resume it with no client.
    request_body   bytea       NOT NULL,
    point          text        NOT NULL CHECK (length(point) BETWEEN 1 AND 100),
    point_data     jsonb       NOT NULL,
    lease          uuid        NOT NULL,
    locked_until   timestamptz NOT NULL,
    attempts       integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, principal, key)
);

CREATE INDEX recovery_points_by_deadline ON api.recovery_points (locked_until);

ALTER TABLE api.recovery_points ENABLE ROW LEVEL SECURITY;
CREATE POLICY recovery_points_scope ON api.recovery_points
    USING (scope = till.current_scope())
    WITH CHECK (scope = till.current_scope());

GRANT SELECT, INSERT, DELETE ON api.recovery_points TO till_app;
GRANT UPDATE (point, point_data, lease, locked_until, attempts, updated_at) ON api.recovery_points TO till_app;

-- The recovery job's queue: rows whose lease ran out at least `grace` ago, in every
-- scope (hence SECURITY DEFINER, like the purge); each is then taken and resumed under
-- its own scope's row-level security.
CREATE FUNCTION api.abandoned_recovery_points(grace interval, rows_max integer)
    RETURNS TABLE (scope text, principal text, key text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT r.scope, r.principal, r.key FROM api.recovery_points r
     WHERE r.locked_until < now() - grace
     ORDER BY r.locked_until
     LIMIT rows_max
$$;

REVOKE ALL ON FUNCTION api.abandoned_recovery_points(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.abandoned_recovery_points(interval, integer) TO till_app;
