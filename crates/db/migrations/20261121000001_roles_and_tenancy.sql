-- The application role. Services connect (or SET ROLE) as till_app, which owns no table,
-- so PostgreSQL applies row-level security to every query the services make. The tables
-- are owned by whoever runs migrations.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'till_app') THEN
        CREATE ROLE till_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

-- The migrating role must be able to SET ROLE till_app for the pools it opens.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'till_app', 'MEMBER') THEN
        EXECUTE format('GRANT till_app TO %I', current_user);
    END IF;
END
$$;

GRANT USAGE ON SCHEMA till TO till_app;

-- The business of the current transaction, as set by `begin_tenant`. NULL when unset, so
-- a policy comparing against it matches nothing: forgetting to scope a transaction shows
-- no rows rather than all of them.
CREATE FUNCTION till.current_business_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('till.business_id', true), '')::uuid $$;

-- The idempotency scope of the current transaction: the business id, or 'platform' for
-- platform-operator requests.
CREATE FUNCTION till.current_scope() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('till.scope', true), '') $$;

GRANT EXECUTE ON FUNCTION till.current_business_id() TO till_app;
GRANT EXECUTE ON FUNCTION till.current_scope() TO till_app;

-- Refuses the change that fired it: the trigger function of every append-only table
-- (history, audit logs), so that not even the tables' owner rewrites them by accident.
CREATE FUNCTION till.refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only (% refused)', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
