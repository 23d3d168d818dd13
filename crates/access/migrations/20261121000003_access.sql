-- The access service's tables (schema `access`). Every table carries the business it
-- belongs to, row-level security enforces it, and till_app gets only what it needs.

CREATE TABLE access.businesses (
    id                    uuid        PRIMARY KEY,
    legal_name            text        NOT NULL CHECK (length(legal_name) BETWEEN 1 AND 200),
    country               text        NOT NULL CHECK (country IN ('GB', 'IN')),
    default_currency      text        NOT NULL CHECK (default_currency ~ '^[A-Z]{3}$'),
    tax_registration_kind text        CHECK (tax_registration_kind IN ('gb_vat', 'in_gst')),
    tax_registration      text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((tax_registration IS NULL) = (tax_registration_kind IS NULL)),
    CHECK (tax_registration_kind IS NULL
           OR (country = 'GB' AND tax_registration_kind = 'gb_vat')
           OR (country = 'IN' AND tax_registration_kind = 'in_gst'))
);

ALTER TABLE access.businesses ENABLE ROW LEVEL SECURITY;
CREATE POLICY businesses_tenant ON access.businesses
    USING (id = till.current_business_id())
    WITH CHECK (id = till.current_business_id());

CREATE TABLE access.api_keys (
    id           uuid        PRIMARY KEY,
    business_id  uuid        NOT NULL REFERENCES access.businesses (id),
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role         text        NOT NULL CHECK (role IN ('owner', 'admin', 'finance', 'viewer')),
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),  -- SHA-256 of the random part
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE INDEX api_keys_business_newest_first ON access.api_keys (business_id, id DESC);

ALTER TABLE access.api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_keys_tenant ON access.api_keys
    USING (business_id = till.current_business_id())
    WITH CHECK (business_id = till.current_business_id());

-- The security audit log. Append-only: till_app may only insert and read, and a trigger
-- refuses updates, deletes and truncation from anyone, table owner included.
CREATE TABLE access.audit_log (
    id          uuid        PRIMARY KEY,
    business_id uuid        REFERENCES access.businesses (id),  -- NULL: not tied to one business
    action      text        NOT NULL,
    actor       text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_business_newest_first ON access.audit_log (business_id, id DESC);

ALTER TABLE access.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_tenant ON access.audit_log
    USING (business_id = till.current_business_id())
    WITH CHECK (business_id = till.current_business_id());

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON access.audit_log
    FOR EACH ROW EXECUTE FUNCTION till.refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON access.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION till.refuse_change();

GRANT USAGE ON SCHEMA access TO till_app;
GRANT SELECT, INSERT ON access.businesses TO till_app;
GRANT SELECT, INSERT, UPDATE (revoked_at) ON access.api_keys TO till_app;
GRANT SELECT, INSERT ON access.audit_log TO till_app;

-- Authentication happens before the business is known, so it cannot run under a tenant's
-- row-level security. These SECURITY DEFINER functions are the only cross-tenant doors,
-- and each opens exactly one thing.

-- The stored credentials of one key, looked up by its id (which the presented key
-- carries). The secret is compared by the caller, in constant time.
CREATE FUNCTION access.api_key_credentials(key_id uuid)
    RETURNS TABLE (business_id uuid, role text, secret_hash bytea, revoked boolean, last_used_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT k.business_id, k.role, k.secret_hash, k.revoked_at IS NOT NULL, k.last_used_at
          FROM access.api_keys k
         WHERE k.id = key_id
    $$;

-- Marks a verified key as used. Written at most once a minute per key, so that
-- authentication does not turn every read into a write.
CREATE FUNCTION access.touch_api_key(key_id uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE access.api_keys
           SET last_used_at = now()
         WHERE id = key_id
           AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    $$;

-- Records a security event that belongs to no tenant transaction (failed-authentication
-- bursts). Append-only, like every write to the audit log.
CREATE FUNCTION access.record_security_event(event_id uuid, business uuid, event_action text, event_actor text, event_details jsonb)
    RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        INSERT INTO access.audit_log (id, business_id, action, actor, details)
        VALUES (event_id, business, event_action, event_actor, event_details)
    $$;

-- Whether a business exists: a dashboard JWT names its business, and a token for a
-- business that does not exist (or no longer does) must not authenticate.
CREATE FUNCTION access.business_exists(business uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM access.businesses WHERE id = business) $$;

REVOKE ALL ON FUNCTION access.business_exists(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION access.business_exists(uuid) TO till_app;
REVOKE ALL ON FUNCTION access.api_key_credentials(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION access.touch_api_key(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION access.record_security_event(uuid, uuid, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION access.api_key_credentials(uuid) TO till_app;
GRANT EXECUTE ON FUNCTION access.touch_api_key(uuid) TO till_app;
GRANT EXECUTE ON FUNCTION access.record_security_event(uuid, uuid, text, text, jsonb) TO till_app;
