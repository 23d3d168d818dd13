-- The ledger (schema `ledger`). Transfers, hold resolutions and entries are append-only,
-- enforced here rather than only in code: till_app has no UPDATE or DELETE on them, and
-- triggers refuse both (and TRUNCATE) even for the owner. Accounts keep running totals
-- that the invariant checker compares with the append-only history.

CREATE TABLE ledger.accounts (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    normal_balance  text        NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
    min_balance     bigint,
    max_balance     bigint,
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version         integer     NOT NULL DEFAULT 1,
    debits_posted   bigint      NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted  bigint      NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending  bigint      NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending bigint      NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (min_balance IS NULL OR max_balance IS NULL OR min_balance <= max_balance)
);

CREATE INDEX accounts_business_newest_first ON ledger.accounts (business_id, id DESC);

-- Every transfer rewrites two account rows. Free space on each page lets PostgreSQL
-- update them in place (HOT: no indexed column changes), without index maintenance.
ALTER TABLE ledger.accounts SET (fillfactor = 70);

CREATE TABLE ledger.transfers (
    id                uuid        PRIMARY KEY,
    business_id       uuid        NOT NULL,
    debit_account_id  uuid        NOT NULL REFERENCES ledger.accounts (id),
    credit_account_id uuid        NOT NULL REFERENCES ledger.accounts (id),
    amount            bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000000),
    currency          text        NOT NULL,
    pending           boolean     NOT NULL,
    expires_at        timestamptz,
    description       text,
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    reverses_id       uuid        REFERENCES ledger.transfers (id),
    created_at        timestamptz NOT NULL,
    CHECK (debit_account_id <> credit_account_id),
    CHECK (pending OR expires_at IS NULL)
);

-- A transfer is reversed at most once. Partial, so ordinary transfers add no entry.
CREATE UNIQUE INDEX transfers_reversed_once ON ledger.transfers (reverses_id) WHERE reverses_id IS NOT NULL;

CREATE INDEX transfers_business_newest_first ON ledger.transfers (business_id, id DESC);
CREATE INDEX transfers_debit_account ON ledger.transfers (debit_account_id, id DESC);
CREATE INDEX transfers_credit_account ON ledger.transfers (credit_account_id, id DESC);

-- How each hold ended. The primary key makes "posted, voided or expired exactly once" a
-- database fact: a second resolution of the same hold cannot be inserted.
CREATE TABLE ledger.hold_resolutions (
    transfer_id   uuid        PRIMARY KEY REFERENCES ledger.transfers (id),
    business_id   uuid        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('posted', 'voided', 'expired')),
    posted_amount bigint      NOT NULL CHECK (posted_amount >= 0),
    resolved_at   timestamptz NOT NULL,
    CHECK (kind = 'posted' OR posted_amount = 0)
);

-- Open holds with an expiry, for the sweeper.
CREATE INDEX transfers_open_holds_by_expiry ON ledger.transfers (expires_at) WHERE pending AND expires_at IS NOT NULL;

-- One movement on one account, with the account's totals after it: the account's
-- history, its statement, and its point-in-time balances.
CREATE TABLE ledger.entries (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    -- No foreign keys here: entries are written only by the engine, in the transaction
    -- that writes their transfer and updates their account, and the checker compares
    -- them with both. Two referential checks per entry would double the engine's
    -- per-transfer work for nothing those guarantees do not already give.
    account_id      uuid        NOT NULL,
    transfer_id     uuid        NOT NULL,
    side            text        NOT NULL CHECK (side IN ('debit', 'credit')),
    kind            text        NOT NULL CHECK (kind IN ('posted', 'hold', 'post', 'void', 'expire')),
    posted_delta    bigint      NOT NULL CHECK (posted_delta >= 0),
    pending_delta   bigint      NOT NULL,
    debits_posted   bigint      NOT NULL,
    credits_posted  bigint      NOT NULL,
    debits_pending  bigint      NOT NULL,
    credits_pending bigint      NOT NULL,
    created_at      timestamptz NOT NULL
);

-- One index serves the statement (newest first) and point-in-time balances.
CREATE INDEX entries_account_history ON ledger.entries (account_id, created_at DESC, id DESC);

CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON ledger.transfers
    FOR EACH ROW EXECUTE FUNCTION till.refuse_change();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON ledger.transfers
    FOR EACH STATEMENT EXECUTE FUNCTION till.refuse_change();
CREATE TRIGGER hold_resolutions_append_only BEFORE UPDATE OR DELETE ON ledger.hold_resolutions
    FOR EACH ROW EXECUTE FUNCTION till.refuse_change();
CREATE TRIGGER hold_resolutions_no_truncate BEFORE TRUNCATE ON ledger.hold_resolutions
    FOR EACH STATEMENT EXECUTE FUNCTION till.refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION till.refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION till.refuse_change();

ALTER TABLE ledger.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledger.transfers ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledger.hold_resolutions ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledger.entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY accounts_tenant ON ledger.accounts
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY transfers_tenant ON ledger.transfers
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY hold_resolutions_tenant ON ledger.hold_resolutions
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY entries_tenant ON ledger.entries
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT USAGE ON SCHEMA ledger TO till_app;
GRANT SELECT, INSERT ON ledger.accounts TO till_app;
GRANT UPDATE (name, min_balance, max_balance, status, metadata, version, debits_posted, credits_posted,
              debits_pending, credits_pending, updated_at) ON ledger.accounts TO till_app;
GRANT SELECT, INSERT ON ledger.transfers, ledger.hold_resolutions, ledger.entries TO till_app;

-- Overdue holds of every business, for the expiry sweeper (which then expires each
-- through its business's engine, under that business's row-level security).
CREATE FUNCTION ledger.overdue_holds(rows_max integer)
    RETURNS TABLE (business_id uuid, transfer_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT t.business_id, t.id
          FROM ledger.transfers t
         WHERE t.pending AND t.expires_at IS NOT NULL AND t.expires_at <= now()
           AND NOT EXISTS (SELECT 1 FROM ledger.hold_resolutions r WHERE r.transfer_id = t.id)
         ORDER BY t.expires_at
         LIMIT rows_max
    $$;

REVOKE ALL ON FUNCTION ledger.overdue_holds(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.overdue_holds(integer) TO till_app;
