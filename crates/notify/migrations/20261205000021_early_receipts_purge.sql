-- Receipts kept for a provider id no notification ever recorded (a create whose reply
-- was lost, then sent again under a new id) would stay forever: the sender purges those
-- older than a week, when no notification could still record their id.
CREATE FUNCTION notify.purge_early_receipts(older_than interval) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        WITH purged AS (DELETE FROM notify.early_receipts WHERE received_at < now() - older_than RETURNING 1)
        SELECT count(*)::integer FROM purged
    $$;
REVOKE ALL ON FUNCTION notify.purge_early_receipts(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify.purge_early_receipts(interval) TO till_app;
