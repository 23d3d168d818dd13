-- A batch's outcomes recorded in one statement, not one round trip per change: the
-- arrays are parallel (change, outcome, error, retry in ms, whether it was an attempt).
CREATE FUNCTION crm.record_outcomes(change_ids uuid[], outcomes text[], errors text[], retry_ms bigint[], attempted boolean[])
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE crm.changes c
           SET status = o.outcome,
               attempts = c.attempts + o.attempted::integer,
               last_error = COALESCE(o.error, c.last_error),
               synced_at = CASE WHEN o.outcome = 'synced' THEN now() END,
               next_attempt_at = now() + o.retry_ms * interval '1 millisecond',
               lease_until = NULL
          FROM unnest(change_ids, outcomes, errors, retry_ms, attempted) AS o(id, outcome, error, retry_ms, attempted)
         WHERE c.id = o.id AND c.status = 'pending'
    $$;
REVOKE ALL ON FUNCTION crm.record_outcomes(uuid[], text[], text[], bigint[], boolean[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crm.record_outcomes(uuid[], text[], text[], bigint[], boolean[]) TO till_app;

-- Its one-row predecessor has no caller any more.
DROP FUNCTION crm.record_outcome(uuid, text, text, bigint, boolean);
