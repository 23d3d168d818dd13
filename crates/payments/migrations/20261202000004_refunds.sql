-- Refunds of captured payment intents. The refundable amount itself is the intent's
-- ledger account (floor 0): a refund reserves from it before the gateway is called, so
-- the ledger refuses a refund beyond what was captured, whatever runs at once.

ALTER TABLE payments.intents ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0
    CHECK (amount_refunded BETWEEN 0 AND amount_received);

CREATE TABLE payments.refunds (
    id                 uuid        PRIMARY KEY,
    business_id        uuid        NOT NULL,
    intent_id          uuid        NOT NULL REFERENCES payments.intents (id),
    amount             bigint      NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
    currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status             text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'requires_review')),
    reason             text        CHECK (reason IN ('duplicate', 'fraudulent', 'requested_by_customer')),
    gateway_refund_id  text,
    failure_reason     text,
    version            integer     NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_intent_newest_first ON payments.refunds (intent_id, id DESC);

ALTER TABLE payments.refunds ENABLE ROW LEVEL SECURITY;
CREATE POLICY refunds_tenant ON payments.refunds
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT, UPDATE ON payments.refunds TO till_app;
