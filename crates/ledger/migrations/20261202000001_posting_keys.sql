-- Idempotency keys of services that post in process (`till_ledger::posting`).
--
-- An HTTP request's key lives in the HTTP idempotency store with its rendered response;
-- a service's key is a domain value (a payment's capture, say) and gets back a typed
-- outcome, so what is kept is what rebuilds it: the command's fingerprint and the ids of
-- the transfers it created or resolved, in order. Written in the transaction that
-- applied the command, by the engine's batch or by the caller's own transaction, so the
-- key exists exactly when its effect does. Only applied commands are kept: a refusal
-- changes nothing, so deciding it again on a retry is safe (DECISIONS.md, "Posting in
-- process").
CREATE TABLE ledger.posting_keys (
    business_id  uuid        NOT NULL,
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint  bytea       NOT NULL CHECK (length(fingerprint) = 32),
    transfer_ids uuid[]      NOT NULL CHECK (cardinality(transfer_ids) >= 1),
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (business_id, key)
);

ALTER TABLE ledger.posting_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY posting_keys_tenant ON ledger.posting_keys
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT ON ledger.posting_keys TO till_app;
