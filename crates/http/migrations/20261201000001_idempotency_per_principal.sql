-- Idempotency keys belong to the credential that made the request, not only to its
-- business (docs/DECISIONS.md, "Idempotency keys are scoped to the credential").
--
-- Before this, a key was (scope, key): any principal of the business that repeated
-- another's request with the same key got that request's stored response, which for
-- `POST /v1/api_keys` is the new key's secret (an admin replaying an owner's request for
-- an owner key got the owner key). Now a row also names its principal (`api_key:key_…`,
-- `user:<JWT subject>` or `platform`), and the role it had, so a replay is only ever
-- the same credential's, and never to a lower role than the one that made it.
--
-- Rows written before this have no principal (''): nobody can be shown to own them, so
-- they are never replayed and never run again; their key answers 422
-- `idempotency_key_reused` until the purge removes it (24 hours at most). Their stored
-- responses are wiped here, since nothing will read them and some hold secrets.
ALTER TABLE api.idempotency_keys ADD COLUMN principal text NOT NULL DEFAULT '';
ALTER TABLE api.idempotency_keys ADD COLUMN principal_role text
    CHECK (principal_role IN ('viewer', 'finance', 'admin', 'owner'));
ALTER TABLE api.idempotency_keys ADD CONSTRAINT idempotency_keys_principal_length CHECK (length(principal) <= 300);
UPDATE api.idempotency_keys SET response_headers = '{}'::jsonb, response_body = ''::bytea WHERE principal = '';
ALTER TABLE api.idempotency_keys ALTER COLUMN principal DROP DEFAULT;

-- (scope, key, principal): a lookup by scope and key reads the principal's own row and
-- any legacy row in one index range.
ALTER TABLE api.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE api.idempotency_keys ADD PRIMARY KEY (scope, key, principal);
