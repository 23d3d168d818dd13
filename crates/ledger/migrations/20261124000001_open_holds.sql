-- The expiry sweeper's queue: holds that have an expiry and are not yet resolved.
--
-- It replaces the partial index `transfers_open_holds_by_expiry`, which could only say
-- "a hold with an expiry": transfers are append-only, so a hold stays `pending` after it
-- is posted, voided or expired, and every sweep read past each resolved hold whose
-- expiry had passed, checking it against `hold_resolutions`. That work grew with the
-- ledger's whole history of holds, once a second, for ever. This table holds only the
-- open ones, so a sweep reads what it will expire.
--
-- Triggers keep it, not the engine, so that every writer does (an instance still on the
-- previous release during a rolling deploy, a repair by hand): a hold with an expiry is
-- queued when its transfer is inserted, and leaves when its resolution is. Both run at
-- the end of the statement that wrote the rows, after every part of it; the engine's
-- write statement inserts transfers and resolutions in parts whose order PostgreSQL does
-- not fix, so the queueing trigger skips a hold whose resolution is already there.
--
-- Not part of the ledger's history (no money is in it): rows are deleted. The checker's
-- `expiry_queue_matches` verifies the queue against the transfers.
CREATE TABLE ledger.open_holds (
    transfer_id uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE INDEX open_holds_by_expiry ON ledger.open_holds (expires_at);

ALTER TABLE ledger.open_holds ENABLE ROW LEVEL SECURITY;
CREATE POLICY open_holds_tenant ON ledger.open_holds
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT ON ledger.open_holds TO till_app;

-- SECURITY DEFINER: the application role reads the queue but never writes it directly.
CREATE FUNCTION ledger.queue_open_hold() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO ledger.open_holds (transfer_id, business_id, expires_at)
    SELECT NEW.id, NEW.business_id, NEW.expires_at
     WHERE NOT EXISTS (SELECT 1 FROM ledger.hold_resolutions r WHERE r.transfer_id = NEW.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION ledger.dequeue_resolved_hold() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    DELETE FROM ledger.open_holds WHERE transfer_id = NEW.transfer_id;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION ledger.queue_open_hold() FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.dequeue_resolved_hold() FROM PUBLIC;

-- The WHEN condition is tested without calling the function, so a plain transfer pays
-- nothing for the queue.
CREATE TRIGGER transfers_queue_open_hold AFTER INSERT ON ledger.transfers
    FOR EACH ROW WHEN (NEW.pending AND NEW.expires_at IS NOT NULL)
    EXECUTE FUNCTION ledger.queue_open_hold();
CREATE TRIGGER hold_resolutions_dequeue AFTER INSERT ON ledger.hold_resolutions
    FOR EACH ROW EXECUTE FUNCTION ledger.dequeue_resolved_hold();

-- The holds open now. A migration is one transaction, and creating the triggers locked
-- both tables against writes until it commits (SHARE ROW EXCLUSIVE, after waiting for
-- writers in progress), so every hold and resolution is either seen here or fires a
-- trigger.
INSERT INTO ledger.open_holds (transfer_id, business_id, expires_at)
SELECT t.id, t.business_id, t.expires_at
  FROM ledger.transfers t
 WHERE t.pending AND t.expires_at IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM ledger.hold_resolutions r WHERE r.transfer_id = t.id);

DROP INDEX ledger.transfers_open_holds_by_expiry;

CREATE OR REPLACE FUNCTION ledger.overdue_holds(rows_max integer)
    RETURNS TABLE (business_id uuid, transfer_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT h.business_id, h.transfer_id
          FROM ledger.open_holds h
         WHERE h.expires_at <= now()
         ORDER BY h.expires_at
         LIMIT rows_max
    $$;
