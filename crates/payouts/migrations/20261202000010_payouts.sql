-- Beneficiaries and payouts. A payout's row and its ledger hold are written in one
-- transaction, so there is never one without the other; the row then carries the saga's
-- state (where the rail stands, when to look next) so that any step resumes after a crash.

CREATE TABLE payouts.beneficiaries (
    id                uuid        PRIMARY KEY,
    business_id       uuid        NOT NULL,
    type              text        NOT NULL CHECK (type IN ('uk_account', 'in_account', 'in_vpa')),
    name              text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 140),
    account_type      text        NOT NULL CHECK (account_type IN ('business', 'personal')),
    sort_code         text        CHECK (sort_code ~ '^[0-9]{6}$'),
    account_number    text        CHECK (account_number ~ '^[0-9]{8,18}$'),
    ifsc              text        CHECK (ifsc ~ '^[A-Z]{4}0[A-Z0-9]{6}$'),
    vpa               text        CHECK (char_length(vpa) BETWEEN 5 AND 321),
    rail              text        NOT NULL CHECK (rail IN ('fps')),
    -- What the rail said of the name (Confirmation of Payee): its bucket, the scheme's
    -- reason code, and for a close match the name the bank holds.
    verification      text        NOT NULL CHECK (verification IN ('match', 'close_match', 'no_match', 'unavailable')),
    verification_code text        CHECK (verification_code ~ '^[A-Z0-9_]{2,32}$'),
    verified_name     text        CHECK (char_length(verified_name) <= 140),
    verified_at       timestamptz NOT NULL,
    status            text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    version           integer     NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (type <> 'uk_account' OR (sort_code IS NOT NULL AND account_number ~ '^[0-9]{8}$' AND ifsc IS NULL AND vpa IS NULL)),
    CHECK (type <> 'in_account' OR (ifsc IS NOT NULL AND account_number ~ '^[0-9]{9,18}$' AND sort_code IS NULL AND vpa IS NULL)),
    CHECK (type <> 'in_vpa' OR (vpa IS NOT NULL AND sort_code IS NULL AND account_number IS NULL AND ifsc IS NULL))
);
CREATE INDEX beneficiaries_business_newest_first ON payouts.beneficiaries (business_id, id DESC);

CREATE TABLE payouts.payouts (
    id                uuid        PRIMARY KEY,
    business_id       uuid        NOT NULL,
    beneficiary_id    uuid        NOT NULL REFERENCES payouts.beneficiaries (id),
    amount            bigint      NOT NULL CHECK (amount BETWEEN 1 AND 100000000000),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reference         text        NOT NULL CHECK (char_length(reference) BETWEEN 1 AND 18),
    description       text        CHECK (char_length(description) <= 500),
    status            text        NOT NULL CHECK (status IN ('requires_approval', 'scheduled', 'processing', 'paid',
                                      'failed', 'canceled', 'returned')),
    status_detail     text,
    failure_reason    text,
    rail              text        NOT NULL CHECK (rail IN ('fps')),
    -- The rail's own id once it accepted the payout, and its last status seen.
    rail_payout_id    text,
    rail_status       text,
    -- The ledger hold on the merchant's available balance, made with this row.
    hold_id           uuid        NOT NULL UNIQUE,
    -- The CoP result the caller accepted (a close or no match needs it said).
    accepted_verification text,
    created_by        text        NOT NULL,
    -- The saga: when the worker next takes the payout, and until when a worker holds it.
    next_step_at      timestamptz,
    lease_until       timestamptz,
    attempts          integer     NOT NULL DEFAULT 0,
    -- A paid payout is watched for a return until then.
    watch_until       timestamptz,
    paid_at           timestamptz,
    version           integer     NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (status NOT IN ('paid', 'returned') OR rail_payout_id IS NOT NULL),
    UNIQUE (rail, rail_payout_id)
);
CREATE INDEX payouts_business_newest_first ON payouts.payouts (business_id, id DESC);
CREATE INDEX payouts_due ON payouts.payouts (next_step_at) WHERE next_step_at IS NOT NULL;

-- The business's ledger accounts this service opened, one per (currency, role).
CREATE TABLE payouts.ledger_accounts (
    business_id uuid NOT NULL,
    currency    text NOT NULL,
    role        text NOT NULL CHECK (role IN ('paid_out:fps')),
    account_id  uuid NOT NULL UNIQUE,
    PRIMARY KEY (business_id, currency, role)
);

ALTER TABLE payouts.beneficiaries ENABLE ROW LEVEL SECURITY;
ALTER TABLE payouts.payouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE payouts.ledger_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY beneficiaries_tenant ON payouts.beneficiaries
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY payouts_tenant ON payouts.payouts
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY ledger_accounts_tenant ON payouts.ledger_accounts
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT USAGE ON SCHEMA payouts TO till_app;
GRANT SELECT, INSERT, UPDATE ON payouts.beneficiaries TO till_app;
GRANT SELECT, INSERT, UPDATE ON payouts.payouts TO till_app;
GRANT SELECT, INSERT ON payouts.ledger_accounts TO till_app;

-- The saga worker's one cross-tenant door: it leases the payouts whose next step is due,
-- of every business, and then works each in a transaction scoped to its business.
CREATE FUNCTION payouts.lease_due(rows_max integer, lease_seconds integer)
    RETURNS TABLE (business_id uuid, payout_id uuid)
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE payouts.payouts p
           SET lease_until = now() + make_interval(secs => lease_seconds)
         WHERE p.id IN (SELECT d.id FROM payouts.payouts d
                         WHERE d.next_step_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
                         ORDER BY d.next_step_at
                         LIMIT rows_max
                         FOR UPDATE SKIP LOCKED)
        RETURNING p.business_id, p.id
    $$;
REVOKE ALL ON FUNCTION payouts.lease_due(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payouts.lease_due(integer, integer) TO till_app;

SELECT events.create_outbox('payouts');
