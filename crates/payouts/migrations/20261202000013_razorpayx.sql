-- India through RazorpayX: a second rail, the fund account each Indian beneficiary is
-- registered as, and the rails' webhooks, recorded once by their event id.

ALTER TABLE payouts.beneficiaries DROP CONSTRAINT beneficiaries_rail_check;
ALTER TABLE payouts.beneficiaries ADD CONSTRAINT beneficiaries_rail_check CHECK (rail IN ('fps', 'razorpayx'));
-- RazorpayX's `fa_…` fund account: what its payouts name. A RazorpayX beneficiary has one.
ALTER TABLE payouts.beneficiaries ADD COLUMN rail_account text
    CHECK (rail_account ~ '^[A-Za-z0-9_]{1,64}$');
ALTER TABLE payouts.beneficiaries ADD CONSTRAINT beneficiaries_registered_with_the_rail
    CHECK (rail <> 'razorpayx' OR rail_account IS NOT NULL);

ALTER TABLE payouts.payouts DROP CONSTRAINT payouts_rail_check;
ALTER TABLE payouts.payouts ADD CONSTRAINT payouts_rail_check CHECK (rail IN ('fps', 'razorpayx'));

ALTER TABLE payouts.ledger_accounts DROP CONSTRAINT ledger_accounts_role_check;
ALTER TABLE payouts.ledger_accounts ADD CONSTRAINT ledger_accounts_role_check
    CHECK (role IN ('paid_out:fps', 'paid_out:razorpayx'));

-- A rail's webhooks, each recorded once: a second delivery changes nothing. The row is
-- the business's once its payout is known; until then only the platform scope sees it.
CREATE TABLE payouts.rail_events (
    rail           text        NOT NULL CHECK (rail IN ('razorpayx')),
    event_id       text        NOT NULL CHECK (char_length(event_id) BETWEEN 1 AND 64),
    type           text        NOT NULL CHECK (char_length(type) BETWEEN 1 AND 64),
    rail_payout_id text        CHECK (char_length(rail_payout_id) <= 64),
    business_id    uuid,
    -- `expedited`: the payout's next step is due now (the step asks the rail itself);
    -- `ignored`: not a payout Till knows, or one with nothing left to learn.
    outcome        text        CHECK (outcome IN ('expedited', 'ignored')),
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rail, event_id)
);
ALTER TABLE payouts.rail_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY rail_events_platform_or_owner ON payouts.rail_events
    USING (till.current_scope() = 'platform' OR business_id = till.current_business_id())
    WITH CHECK (till.current_scope() = 'platform' OR business_id = till.current_business_id());
GRANT SELECT, INSERT ON payouts.rail_events TO till_app;
GRANT UPDATE (outcome) ON payouts.rail_events TO till_app;

-- The business of a rail's payout: what a webhook about it needs to know before it can
-- act as that business, and all it reveals.
CREATE FUNCTION payouts.owner_of_rail_payout(payout_rail text, payout_rail_id text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT business_id FROM payouts.payouts WHERE rail = payout_rail AND rail_payout_id = payout_rail_id
$$;
REVOKE ALL ON FUNCTION payouts.owner_of_rail_payout(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payouts.owner_of_rail_payout(text, text) TO till_app;
