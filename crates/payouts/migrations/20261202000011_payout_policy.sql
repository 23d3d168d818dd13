-- The payout policy per business (limits per currency over the defaults, cooling-off for
-- new beneficiaries), and who approved a payout that needed it.

CREATE TABLE payouts.policies (
    business_id          uuid        PRIMARY KEY,
    -- Currency code → {per_payout_max, daily_max, monthly_max, approval_threshold}; a
    -- currency left out keeps the defaults.
    limits               jsonb       NOT NULL DEFAULT '{}',
    cooling_off_seconds  integer     NOT NULL DEFAULT 0 CHECK (cooling_off_seconds BETWEEN 0 AND 2592000),
    version              integer     NOT NULL DEFAULT 1,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE payouts.policies ENABLE ROW LEVEL SECURITY;
CREATE POLICY policies_tenant ON payouts.policies
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT, UPDATE ON payouts.policies TO till_app;

ALTER TABLE payouts.payouts ADD COLUMN approved_by text;
ALTER TABLE payouts.payouts ADD COLUMN approved_at timestamptz;
-- What the policy decided at creation: send, requires_approval or scheduled.
ALTER TABLE payouts.payouts ADD COLUMN policy_decision text NOT NULL DEFAULT 'send'
    CHECK (policy_decision IN ('send', 'requires_approval', 'scheduled'));
