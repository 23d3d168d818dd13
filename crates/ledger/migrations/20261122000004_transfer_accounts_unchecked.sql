-- Transfers stop checking their accounts with foreign keys; accounts can no longer be
-- deleted, and the invariant checker verifies the references instead.
--
-- Each transfer paid for two referential checks (a `SELECT ... FOR KEY SHARE` on
-- ledger.accounts per side, run by trigger): measured with pg_stat_statements under
-- `till bench ledger`, 278 ms of a batch writer's 2.2 s of writes in 8 s. They guarded
-- nothing the engine does not already guarantee: it writes a transfer only after loading
-- both accounts in the same transaction, holding their row locks, from the
-- transfer's own business (which a foreign key does not even check), and an account is
-- never deleted — till_app has no DELETE on it, and from now on a trigger refuses it to
-- everyone, as for the append-only tables. Entries never had foreign keys, for the same
-- reason (see 20261122000001_ledger.sql). The checker's `references_valid` invariant
-- reports any transfer or entry whose account is missing, in another business, or in
-- another currency.
ALTER TABLE ledger.transfers DROP CONSTRAINT transfers_debit_account_id_fkey;
ALTER TABLE ledger.transfers DROP CONSTRAINT transfers_credit_account_id_fkey;

-- Accounts are closed, never deleted: their history refers to them.
CREATE FUNCTION ledger.refuse_account_removal() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger accounts are closed, never removed (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER accounts_never_deleted BEFORE DELETE ON ledger.accounts
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_account_removal();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON ledger.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_account_removal();
