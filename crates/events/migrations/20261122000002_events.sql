-- The embedded event log: the bus of a single-node Till. Events arrive here from the
-- services' outboxes through the relay, in order per outbox, exactly once (the move is
-- one transaction; `id` and (resource_id, sequence) are unique besides).
CREATE TABLE events.log (
    position     bigserial   PRIMARY KEY,
    id           uuid        NOT NULL UNIQUE,
    type         text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    business_id  uuid        NOT NULL,
    resource_id  text        NOT NULL,
    sequence     bigint      NOT NULL CHECK (sequence >= 1),
    occurred_at  timestamptz NOT NULL,
    request_id   text,
    data         jsonb       NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resource_id, sequence)
);

CREATE INDEX log_business_newest_first ON events.log (business_id, position DESC);


ALTER TABLE events.log ENABLE ROW LEVEL SECURITY;
CREATE POLICY log_tenant ON events.log USING (business_id = till.current_business_id());

CREATE TRIGGER log_append_only BEFORE UPDATE OR DELETE ON events.log
    FOR EACH ROW EXECUTE FUNCTION till.refuse_change();

GRANT USAGE ON SCHEMA events TO till_app;
GRANT SELECT ON events.log TO till_app;

-- The outboxes the relay drains. A service's migration registers its outbox here.
CREATE TABLE events.outboxes (name text PRIMARY KEY);

-- Moves up to rows_max committed events from one registered outbox into the log, oldest
-- first, in one transaction, or nothing if another relay holds this outbox. Returns how
-- many moved. SECURITY DEFINER: the relay works across businesses, which till_app's
-- row-level security would not allow, and this function is its only door.
CREATE FUNCTION events.relay(outbox text, rows_max integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    moved integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events.outboxes WHERE name = outbox) THEN
        RAISE EXCEPTION 'unknown outbox %', outbox;
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('relay' || chr(31) || outbox, 0)) THEN
        RETURN 0;
    END IF;
    EXECUTE format(
        'WITH batch AS (
             DELETE FROM %s WHERE position IN (SELECT position FROM %s ORDER BY position LIMIT $1)
             RETURNING position, id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data
         )
         INSERT INTO events.log (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
         SELECT id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data
           FROM batch ORDER BY position',
        outbox::regclass, outbox::regclass)
    USING rows_max;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

-- Events waiting in an outbox and the age of the oldest, for `till events backlog`.
CREATE FUNCTION events.backlog(outbox text, OUT waiting bigint, OUT oldest timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events.outboxes WHERE name = outbox) THEN
        RAISE EXCEPTION 'unknown outbox %', outbox;
    END IF;
    EXECUTE format('SELECT count(*), min(occurred_at) FROM %s', outbox::regclass) INTO waiting, oldest;
END
$$;

REVOKE ALL ON FUNCTION events.relay(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION events.backlog(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.relay(text, integer) TO till_app;
GRANT EXECUTE ON FUNCTION events.backlog(text) TO till_app;

-- Producers notify on this channel after writing to an outbox; the relay listens.
CREATE FUNCTION events.notify_outbox() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('till_outbox', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;
GRANT EXECUTE ON FUNCTION events.notify_outbox() TO till_app;

-- Creates a service's transactional outbox, `<schema>.outbox`, and registers it with the
-- relay: one definition for every service. till_app may only insert, for its own
-- business; inserts notify the relay.
CREATE FUNCTION events.create_outbox(schema_name text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE %1$I.outbox (
             position    bigserial   PRIMARY KEY,
             id          uuid        NOT NULL UNIQUE,
             type        text        NOT NULL,
             version     integer     NOT NULL,
             business_id uuid        NOT NULL,
             resource_id text        NOT NULL,
             sequence    bigint      NOT NULL,
             occurred_at timestamptz NOT NULL,
             request_id  text,
             data        jsonb       NOT NULL
         );
         ALTER TABLE %1$I.outbox ENABLE ROW LEVEL SECURITY;
         CREATE POLICY outbox_tenant ON %1$I.outbox FOR INSERT WITH CHECK (business_id = till.current_business_id());
         GRANT INSERT ON %1$I.outbox TO till_app;
         GRANT USAGE ON SEQUENCE %1$I.outbox_position_seq TO till_app;
         CREATE TRIGGER outbox_notify AFTER INSERT ON %1$I.outbox
             FOR EACH STATEMENT EXECUTE FUNCTION events.notify_outbox();',
        schema_name);
    INSERT INTO events.outboxes (name) VALUES (schema_name || '.outbox');
END
$$;
REVOKE ALL ON FUNCTION events.create_outbox(text) FROM PUBLIC;
