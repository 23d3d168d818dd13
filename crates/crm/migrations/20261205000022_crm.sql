-- The Salesforce sync's queue: each change to a Salesforce record that an event made,
-- in the order the events came, one row per (event, record). A record's changes go out
-- in order: only the oldest change of a record not yet synced is ever sent, so a change
-- the org refused (parked, with its error) holds back only that record's later ones.

CREATE TABLE crm.changes (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    sobject         text        NOT NULL CHECK (sobject ~ '^[A-Za-z][A-Za-z0-9_]{0,79}$'),
    external_field  text        NOT NULL CHECK (external_field ~ '^[A-Za-z][A-Za-z0-9_]{0,79}$'),
    external_id     text        NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 255),
    fields          jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'synced', 'parked')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    synced_at       timestamptz,
    UNIQUE (event_id, sobject, external_id)
);
CREATE INDEX changes_unsynced ON crm.changes (sobject, external_id, id) WHERE status <> 'synced';

-- Refunds seen, so that a payment's Opportunity carries what was refunded in all.
CREATE TABLE crm.refunds (
    refund_id         text   PRIMARY KEY,
    business_id       uuid   NOT NULL,
    payment_intent_id text   NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0)
);
CREATE INDEX refunds_by_payment ON crm.refunds (business_id, payment_intent_id);

ALTER TABLE crm.changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.refunds ENABLE ROW LEVEL SECURITY;
CREATE POLICY changes_tenant ON crm.changes
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY refunds_tenant ON crm.refunds
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT USAGE ON SCHEMA crm TO till_app;
GRANT SELECT, INSERT ON crm.changes TO till_app;
GRANT SELECT, INSERT ON crm.refunds TO till_app;

-- The worker's lease, across businesses (one org mirrors them all): the oldest unsynced
-- change of each record, if it is pending, due and not leased.
CREATE FUNCTION crm.lease_due(rows_max integer, lease_seconds integer)
    RETURNS TABLE (id uuid, sobject text, external_field text, external_id text, fields text, attempts integer)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        WITH heads AS (
            SELECT DISTINCT ON (c.sobject, c.external_id) c.id, c.status, c.next_attempt_at, c.lease_until
              FROM crm.changes c
             WHERE c.status <> 'synced'
             ORDER BY c.sobject, c.external_id, c.id
        ), due AS (
            SELECT h.id FROM heads h
             WHERE h.status = 'pending' AND h.next_attempt_at <= now()
               AND (h.lease_until IS NULL OR h.lease_until < now())
             ORDER BY h.id
             LIMIT rows_max
        )
        UPDATE crm.changes c SET lease_until = now() + make_interval(secs => lease_seconds)
         WHERE c.id IN (SELECT id FROM due) AND c.status = 'pending'
           AND (c.lease_until IS NULL OR c.lease_until < now())
        RETURNING c.id, c.sobject, c.external_field, c.external_id, c.fields::text, c.attempts
    $$;

-- What one attempt came to: `synced`, `parked` (the org refused the record: error kept),
-- or `pending` again after `retry_ms` (counted as an attempt when `attempted`).
CREATE FUNCTION crm.record_outcome(change_id uuid, outcome text, error text, retry_ms bigint, attempted boolean)
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE crm.changes
           SET status = outcome,
               attempts = attempts + attempted::integer,
               last_error = COALESCE(error, last_error),
               synced_at = CASE WHEN outcome = 'synced' THEN now() END,
               next_attempt_at = now() + retry_ms * interval '1 millisecond',
               lease_until = NULL
         WHERE id = change_id AND status = 'pending'
    $$;

-- `till crm status`: the backlog, its age, what is parked and the last error.
CREATE FUNCTION crm.status()
    RETURNS TABLE (pending bigint, oldest_pending timestamptz, parked bigint, last_error text)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT count(*) FILTER (WHERE status = 'pending'),
               min(created_at) FILTER (WHERE status = 'pending'),
               count(*) FILTER (WHERE status = 'parked'),
               (SELECT last_error FROM crm.changes WHERE last_error IS NOT NULL AND status <> 'synced'
                 ORDER BY next_attempt_at DESC LIMIT 1)
          FROM crm.changes WHERE status <> 'synced'
    $$;

-- `till crm replay`: parked changes go back in the queue, in their places.
CREATE FUNCTION crm.replay_parked() RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        WITH replayed AS (
            UPDATE crm.changes SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL
             WHERE status = 'parked' RETURNING 1)
        SELECT count(*)::integer FROM replayed
    $$;

CREATE FUNCTION crm.wake_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crm_changes', '');
    RETURN NULL;
END $$;
CREATE TRIGGER changes_made AFTER INSERT ON crm.changes FOR EACH STATEMENT EXECUTE FUNCTION crm.wake_worker();

REVOKE ALL ON FUNCTION crm.lease_due(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION crm.record_outcome(uuid, text, text, bigint, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION crm.status() FROM PUBLIC;
REVOKE ALL ON FUNCTION crm.replay_parked() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crm.lease_due(integer, integer) TO till_app;
GRANT EXECUTE ON FUNCTION crm.record_outcome(uuid, text, text, bigint, boolean) TO till_app;
