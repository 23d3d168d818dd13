-- Coupons: an order discount behind a code, with a validity window and a redemption
-- limit. A quote checks them; an order redeems one by a conditional UPDATE of
-- `redemptions`, which the check keeps within the limit under any concurrency.

CREATE TABLE commerce.coupons (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    code            text        NOT NULL CHECK (code ~ '^[A-Z0-9][A-Z0-9_-]{2,31}$'),
    percent_bps     integer     CHECK (percent_bps BETWEEN 1 AND 10000),
    amount          bigint      CHECK (amount BETWEEN 1 AND 100000000000),
    currency        text        CHECK (currency ~ '^[A-Z]{3}$'),
    valid_from      timestamptz,
    valid_until     timestamptz,
    max_redemptions integer     CHECK (max_redemptions >= 1),
    redemptions     integer     NOT NULL DEFAULT 0 CHECK (redemptions >= 0),
    active          boolean     NOT NULL DEFAULT true,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (business_id, code),
    CHECK ((percent_bps IS NULL) <> (amount IS NULL)),
    CHECK ((amount IS NULL) = (currency IS NULL)),
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until),
    CHECK (max_redemptions IS NULL OR redemptions <= max_redemptions)
);
CREATE INDEX coupons_business_newest_first ON commerce.coupons (business_id, id DESC);

ALTER TABLE commerce.coupons ENABLE ROW LEVEL SECURITY;
CREATE POLICY coupons_tenant ON commerce.coupons
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT, UPDATE ON commerce.coupons TO till_app;
