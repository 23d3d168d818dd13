-- The Faster Payments provider's webhooks (Modulr-shaped `PAYOUT` notifications) are
-- recorded once, as RazorpayX's are. Their id is the payment's id and status.
ALTER TABLE payouts.rail_events DROP CONSTRAINT rail_events_rail_check;
ALTER TABLE payouts.rail_events ADD CONSTRAINT rail_events_rail_check CHECK (rail IN ('fps', 'razorpayx'));

-- A webhook finds its payout by the rail's id for it (`owner_of_rail_payout`, and the
-- update that makes its step due): an index, not a scan of every payout. Unique, since
-- one rail payment is one payout's: a rail that answered two payouts with the same id
-- would make the second payout's step fail loudly instead of counting one payment twice.
CREATE UNIQUE INDEX payouts_by_rail_payout ON payouts.payouts (rail, rail_payout_id) WHERE rail_payout_id IS NOT NULL;

-- A webhook that arrives while a step holds the payout's lease must not be lost: the
-- step may have asked the rail just before the rail moved. It marks the payout
-- `hinted`; taking a lease clears the mark, and a step that finds it set when it writes
-- makes its next step due at once instead of on the poll schedule.
ALTER TABLE payouts.payouts ADD COLUMN hinted boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION payouts.lease_due(rows_max integer, lease_seconds integer)
    RETURNS TABLE (business_id uuid, payout_id uuid)
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE payouts.payouts p
           SET lease_until = now() + make_interval(secs => lease_seconds), hinted = false
         WHERE p.id IN (SELECT d.id FROM payouts.payouts d
                         WHERE d.next_step_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
                         ORDER BY d.next_step_at
                         LIMIT rows_max
                         FOR UPDATE SKIP LOCKED)
        RETURNING p.business_id, p.id
    $$;

-- The business of the payout a webhook is about: by the rail's id for it, or, while the
-- payout has none yet (the event outran the create's reply), by Till's own id as the
-- rail echoes it. Still all it reveals is the owner. The two-argument form stays for
-- the release before this one, which may still be running during a rollout.
CREATE FUNCTION payouts.owner_of_rail_payout(payout_rail text, payout_rail_id text, payout_id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT business_id FROM payouts.payouts
     WHERE rail = payout_rail
       AND (rail_payout_id = payout_rail_id OR (rail_payout_id IS NULL AND id = payout_id))
     LIMIT 1
$$;
REVOKE ALL ON FUNCTION payouts.owner_of_rail_payout(text, text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payouts.owner_of_rail_payout(text, text, uuid) TO till_app;
