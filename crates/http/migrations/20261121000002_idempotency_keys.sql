-- Idempotency keys and the responses they replay (API.md, "Idempotency").
--
-- A row is written in the same transaction as the request's effect, so "the effect
-- happened" and "the key is recorded" commit or roll back together. While a request runs
-- it holds a transaction-level advisory lock on its key instead of an "in flight" row:
-- a crash releases the lock with the transaction, so no key is ever stuck in flight.
CREATE TABLE api.idempotency_keys (
    scope            text        NOT NULL,  -- the business id, or 'platform'
    key              text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method           text        NOT NULL,
    path             text        NOT NULL,
    fingerprint      bytea       NOT NULL,  -- SHA-256 of method, path and query, body
    response_status  smallint    NOT NULL,
    response_headers jsonb       NOT NULL,
    response_body    bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON api.idempotency_keys (created_at);

ALTER TABLE api.idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_scope ON api.idempotency_keys
    USING (scope = till.current_scope())
    WITH CHECK (scope = till.current_scope());

GRANT USAGE ON SCHEMA api TO till_app;
GRANT SELECT, INSERT ON api.idempotency_keys TO till_app;

-- The purge job runs across every scope, so it is a SECURITY DEFINER function owned by
-- the migrating role; the app may call it but cannot delete keys any other way, and
-- cannot shorten the retention below the 24 hours API.md promises.
CREATE FUNCTION api.purge_idempotency_keys(retention interval, batch_rows_max integer)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    purged bigint;
BEGIN
    IF retention < interval '24 hours' THEN
        RAISE EXCEPTION 'idempotency keys are kept at least 24 hours (asked for %)', retention;
    END IF;
    DELETE FROM api.idempotency_keys
     WHERE ctid = ANY (ARRAY(
         SELECT ctid FROM api.idempotency_keys
          WHERE created_at < now() - retention
          LIMIT batch_rows_max));
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;

REVOKE ALL ON FUNCTION api.purge_idempotency_keys(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.purge_idempotency_keys(interval, integer) TO till_app;
