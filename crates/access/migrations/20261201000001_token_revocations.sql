-- Revoked dashboard tokens: one token by its `jti` ('token'), or every token of a subject
-- issued before `revoked_at` ('subject', so that signing in again works). Tokens live at
-- most the configured maximum (`exp - iat`), so a revocation older than that can revoke
-- nothing any more and is purged. Platform data, not a tenant's: no business column.
CREATE TABLE access.token_revocations (
    kind       text        NOT NULL CHECK (kind IN ('token', 'subject')),
    value      text        NOT NULL CHECK (length(value) BETWEEN 1 AND 255),
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);
CREATE INDEX token_revocations_revoked_at ON access.token_revocations (revoked_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON access.token_revocations TO till_app;

-- Whether a verified dashboard token may act: its business exists and it is not revoked.
-- Returns NULL when it may, else why not. One round trip per token use.
CREATE FUNCTION access.token_refusal(business uuid, subject text, token_id text, issued_at timestamptz)
    RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT CASE
            WHEN NOT EXISTS (SELECT 1 FROM access.businesses WHERE id = business) THEN 'no such business'
            WHEN token_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM access.token_revocations WHERE kind = 'token' AND value = token_id) THEN 'revoked token'
            WHEN EXISTS (
                SELECT 1 FROM access.token_revocations
                 WHERE kind = 'subject' AND value = subject AND revoked_at > issued_at) THEN 'revoked subject'
        END
    $$;
REVOKE ALL ON FUNCTION access.token_refusal(uuid, text, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION access.token_refusal(uuid, text, text, timestamptz) TO till_app;
