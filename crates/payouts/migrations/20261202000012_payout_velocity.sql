-- What each business paid out per currency and UTC day, kept with each payout's own
-- change, so that the velocity limits read at most 31 rows instead of summing every
-- payout of the month on each creation, a cost that grows with the month. A payout
-- counts from its creation until it fails or is canceled.
CREATE TABLE payouts.velocity (
    business_id uuid   NOT NULL,
    currency    text   NOT NULL,
    day         date   NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (business_id, currency, day)
);
ALTER TABLE payouts.velocity ENABLE ROW LEVEL SECURITY;
CREATE POLICY velocity_tenant ON payouts.velocity
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT, UPDATE ON payouts.velocity TO till_app;

INSERT INTO payouts.velocity (business_id, currency, day, amount)
SELECT business_id, currency, (created_at AT TIME ZONE 'UTC')::date, sum(amount)
  FROM payouts.payouts WHERE status NOT IN ('failed', 'canceled')
 GROUP BY 1, 2, 3;
