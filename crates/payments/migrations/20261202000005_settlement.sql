-- Settlement and reconciliation: a gateway's payout reports every line it paid (charges
-- less their fees, refunds); each line is matched with what Till recorded, what matches
-- moves from the merchant's pending balance to available, and anything else becomes a
-- reconciliation exception, never a silent adjustment.

-- The gateway's charge on a captured intent: what its settlement line names.
ALTER TABLE payments.intents ADD COLUMN gateway_charge_id text, ADD COLUMN settled_at timestamptz;
CREATE UNIQUE INDEX intents_gateway_charge ON payments.intents (gateway, gateway_charge_id)
    WHERE gateway_charge_id IS NOT NULL;
-- Captured and not yet settled, for the checker's "nothing pending forever".
CREATE INDEX intents_unsettled ON payments.intents (updated_at)
    WHERE status = 'succeeded' AND settled_at IS NULL;
CREATE INDEX intents_business_status_newest_first ON payments.intents (business_id, status, id DESC);

ALTER TABLE payments.refunds ADD COLUMN settled_at timestamptz;
CREATE UNIQUE INDEX refunds_gateway_refund ON payments.refunds (gateway_refund_id)
    WHERE gateway_refund_id IS NOT NULL;
CREATE INDEX refunds_business_newest_first ON payments.refunds (business_id, id DESC);

ALTER TABLE payments.ledger_accounts DROP CONSTRAINT ledger_accounts_role_check;
ALTER TABLE payments.ledger_accounts ADD CONSTRAINT ledger_accounts_role_check
    CHECK (role IN ('receivable:stripe', 'merchant_pending', 'refund_capacity', 'merchant_available',
                    'settled:stripe'));

-- A gateway's payout, across every business it paid: the platform's record of which
-- reports it has reconciled. Only platform-scope transactions see it.
CREATE TABLE payments.gateway_payouts (
    gateway            text        NOT NULL CHECK (gateway IN ('stripe')),
    gateway_payout_id  text        NOT NULL,
    amount             bigint      NOT NULL,
    currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status             text        NOT NULL CHECK (status IN ('reconciling', 'reconciled')),
    lines              integer     NOT NULL DEFAULT 0,
    paid_at            timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    reconciled_at      timestamptz,
    PRIMARY KEY (gateway, gateway_payout_id)
);

-- One business's part of a gateway payout.
CREATE TABLE payments.settlements (
    id                 uuid        PRIMARY KEY,
    business_id        uuid        NOT NULL,
    gateway            text        NOT NULL,
    gateway_payout_id  text        NOT NULL,
    currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Of the matched lines: charges' amounts, their fees, refunds (positive), and the net
    -- that moved from pending to available (charges - fees - refunds).
    charges            bigint      NOT NULL,
    fees               bigint      NOT NULL,
    refunds            bigint      NOT NULL,
    net                bigint      NOT NULL CHECK (net = charges - fees - refunds),
    matched_lines      integer     NOT NULL,
    exceptions         integer     NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (business_id, gateway, gateway_payout_id),
    FOREIGN KEY (gateway, gateway_payout_id) REFERENCES payments.gateway_payouts
);
CREATE INDEX settlements_business_newest_first ON payments.settlements (business_id, id DESC);

-- Every line of a report that belongs to a business, once (its primary key is the
-- gateway's line id: a report read twice records nothing twice).
CREATE TABLE payments.settlement_lines (
    gateway          text        NOT NULL,
    gateway_line_id  text        NOT NULL,
    settlement_id    uuid        NOT NULL REFERENCES payments.settlements (id),
    business_id      uuid        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('charge', 'refund')),
    source           text        NOT NULL,
    intent_id        uuid        REFERENCES payments.intents (id),
    refund_id        uuid        REFERENCES payments.refunds (id),
    amount           bigint      NOT NULL,
    fee              bigint      NOT NULL,
    net              bigint      NOT NULL CHECK (net = amount - fee),
    matched          boolean     NOT NULL,
    PRIMARY KEY (gateway, gateway_line_id)
);
CREATE INDEX settlement_lines_of_settlement ON payments.settlement_lines (settlement_id);

-- What did not match. A line of no business Till knows (or a report whose lines do not
-- add up to its payout) has no business: only the platform sees it.
CREATE TABLE payments.reconciliation_exceptions (
    id                 uuid        PRIMARY KEY,
    business_id        uuid,
    gateway            text        NOT NULL,
    gateway_payout_id  text        NOT NULL,
    -- The line, or NULL for the report as a whole.
    gateway_line_id    text,
    kind               text        NOT NULL CHECK (kind IN ('unknown_line', 'amount_mismatch', 'fee_mismatch',
                                       'currency_mismatch', 'refund_not_succeeded', 'report_total_mismatch')),
    intent_id          uuid        REFERENCES payments.intents (id),
    refund_id          uuid        REFERENCES payments.refunds (id),
    expected           bigint,
    actual             bigint,
    detail             text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (gateway, gateway_payout_id) REFERENCES payments.gateway_payouts
);
-- One exception of a kind per line or per report, however often it is read.
CREATE UNIQUE INDEX reconciliation_exceptions_once
    ON payments.reconciliation_exceptions (gateway, gateway_payout_id, coalesce(gateway_line_id, ''), kind);
CREATE INDEX reconciliation_exceptions_business_newest_first
    ON payments.reconciliation_exceptions (business_id, id DESC);

ALTER TABLE payments.gateway_payouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.settlements ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.settlement_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.reconciliation_exceptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY gateway_payouts_platform ON payments.gateway_payouts
    USING (till.current_scope() = 'platform') WITH CHECK (till.current_scope() = 'platform');
-- A business reads its own settlement rows; the platform (which reconciles) reads them too,
-- to find a payout's businesses, but only inserts inside a business's transaction.
CREATE POLICY settlements_tenant ON payments.settlements
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY settlement_lines_tenant ON payments.settlement_lines
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY reconciliation_exceptions_tenant ON payments.reconciliation_exceptions
    USING (business_id = till.current_business_id()
           OR (business_id IS NULL AND till.current_scope() = 'platform'))
    WITH CHECK (business_id = till.current_business_id()
                OR (business_id IS NULL AND till.current_scope() = 'platform'));

GRANT SELECT, INSERT, UPDATE ON payments.gateway_payouts TO till_app;
-- A settlement row is inserted first (it claims the business's part of the payout) and its
-- totals written once its lines are matched, in the same transaction.
GRANT SELECT, INSERT, UPDATE ON payments.settlements TO till_app;
GRANT SELECT, INSERT ON payments.settlement_lines, payments.reconciliation_exceptions TO till_app;

-- The business a settlement line belongs to, from the gateway's id of its charge or
-- refund: the one cross-business read the reconciler needs, and all it reveals.
CREATE FUNCTION payments.owner_of_line(line_gateway text, line_kind text, line_source text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE line_kind
        WHEN 'charge' THEN (SELECT business_id FROM payments.intents
                             WHERE gateway = line_gateway AND gateway_charge_id = line_source)
        WHEN 'refund' THEN (SELECT r.business_id FROM payments.refunds r
                              JOIN payments.intents i ON i.id = r.intent_id
                             WHERE i.gateway = line_gateway AND r.gateway_refund_id = line_source)
    END
$$;
REVOKE ALL ON FUNCTION payments.owner_of_line(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.owner_of_line(text, text, text) TO till_app;
