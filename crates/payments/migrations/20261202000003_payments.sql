-- Payment intents, and the ledger accounts the payments service posts to.

CREATE TABLE payments.intents (
    id                  uuid        PRIMARY KEY,
    business_id         uuid        NOT NULL,
    -- Stripe's largest amount is eight digits of minor units.
    amount              bigint      NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    capture_method      text        NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    status              text        NOT NULL CHECK (status IN ('requires_payment_method', 'requires_confirmation',
                                        'requires_action', 'processing', 'requires_capture', 'canceled', 'succeeded',
                                        'requires_review')),
    gateway             text        NOT NULL CHECK (gateway IN ('stripe')),
    -- The gateway's own id, once its create answered.
    gateway_intent_id   text,
    payment_method      text,
    amount_capturable   bigint      NOT NULL DEFAULT 0 CHECK (amount_capturable BETWEEN 0 AND amount),
    amount_received     bigint      NOT NULL DEFAULT 0 CHECK (amount_received BETWEEN 0 AND amount),
    fee                 bigint      CHECK (fee >= 0),
    last_payment_error  jsonb,
    -- Why the intent needs a person: what about the gateway's reply could not be trusted.
    review_reason       text,
    description         text,
    metadata            jsonb       NOT NULL DEFAULT '{}',
    customer_email      text,
    -- The ledger's hold of an authorisation awaiting capture, and the intent's refundable
    -- account (opened at capture, with a floor of zero).
    authorisation_hold  uuid,
    refundable_account  uuid,
    version             integer     NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway, gateway_intent_id)
);
CREATE INDEX intents_business_newest_first ON payments.intents (business_id, id DESC);

-- The business's ledger accounts this service opened, one per (currency, role).
CREATE TABLE payments.ledger_accounts (
    business_id uuid NOT NULL,
    currency    text NOT NULL,
    role        text NOT NULL CHECK (role IN ('receivable:stripe', 'merchant_pending', 'refund_capacity')),
    account_id  uuid NOT NULL UNIQUE,
    PRIMARY KEY (business_id, currency, role)
);

ALTER TABLE payments.intents ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.ledger_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY intents_tenant ON payments.intents
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY ledger_accounts_tenant ON payments.ledger_accounts
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT USAGE ON SCHEMA payments TO till_app;
GRANT SELECT, INSERT, UPDATE ON payments.intents TO till_app;
GRANT SELECT, INSERT ON payments.ledger_accounts TO till_app;

SELECT events.create_outbox('payments');
