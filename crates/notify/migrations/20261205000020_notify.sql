-- Notifications: what each business wants sent when its events happen (settings and
-- templates), and every notification Till decided to send, one row each.
--
-- A notification is made by the consumer in the transaction that records its event in
-- the inbox, so it exists once per event; the unique key (event, rule, recipient) says
-- so again for any second path. The sender then leases due rows, sends them and records
-- the outcome; a row leaves `queued` only for an end (sent, delivered, failed,
-- suppressed).

CREATE TABLE notify.settings (
    business_id   uuid        PRIMARY KEY,
    -- The name messages are sent in; NULL: the business's legal name.
    sender_name   text        CHECK (char_length(sender_name) BETWEEN 1 AND 100),
    reply_to      text        CHECK (char_length(reply_to) BETWEEN 3 AND 254),
    finance_email text        CHECK (char_length(finance_email) BETWEEN 3 AND 254),
    finance_phone text        CHECK (finance_phone ~ '^\+[1-9][0-9]{7,14}$'),
    -- The rules, as the API validated them: [{name, event_type, channel, to, template_id}].
    rules         jsonb       NOT NULL,
    version       integer     NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notify.templates (
    id          uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    event_type  text        NOT NULL,
    channel     text        NOT NULL CHECK (channel IN ('email', 'sms')),
    subject     text,
    text_body   text        NOT NULL,
    html_body   text,
    version     integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((channel = 'email') = (subject IS NOT NULL)),
    CHECK (channel = 'email' OR html_body IS NULL)
);
CREATE INDEX templates_business_newest_first ON notify.templates (business_id, id DESC);

CREATE TABLE notify.notifications (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    resource_id     text        NOT NULL,
    rule            text        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('email', 'sms')),
    -- The address or number; '' for a suppressed notification that had none.
    recipient       text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'suppressed')),
    sender_name     text,
    reply_to        text,
    subject         text,
    text_body       text,
    html_body       text,
    -- Attempts that reached the provider (or may have): an outage that refused the
    -- connection, or an open breaker, is not an attempt and never uses them up.
    attempts        integer     NOT NULL DEFAULT 0,
    -- Sends whose outcome was unknown (Till stopped, or the connection broke, after the
    -- message was handed over): the next attempt sends it again, with the same Message-ID.
    in_doubt        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    last_error      text,
    provider_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz,
    UNIQUE (business_id, event_id, rule, recipient),
    CHECK ((status = 'queued') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX notifications_business_newest_first ON notify.notifications (business_id, id DESC);
-- The sender's queue: queued rows per recipient, oldest first.
CREATE INDEX notifications_queued ON notify.notifications (business_id, channel, recipient, id)
    WHERE status = 'queued';

ALTER TABLE notify.settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE notify.templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE notify.notifications ENABLE ROW LEVEL SECURITY;
CREATE POLICY settings_tenant ON notify.settings
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY templates_tenant ON notify.templates
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY notifications_tenant ON notify.notifications
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT USAGE ON SCHEMA notify TO till_app;
GRANT SELECT, INSERT, UPDATE ON notify.settings TO till_app;
GRANT SELECT, INSERT, UPDATE ON notify.templates TO till_app;
GRANT SELECT, INSERT, UPDATE ON notify.notifications TO till_app;

-- The sender's claim, across businesses (row-level security would hide all but one):
-- the oldest queued notification of each recipient, if it is due, not leased, and on a
-- channel whose provider is taking messages now, leased for `lease_seconds`. Only the
-- head of a recipient's queue is ever claimed, so one recipient's messages go out in
-- the order they were made, and a failing one holds back only its own recipient's.
-- `in_doubt` counts a lease that ran out: whoever held it stopped mid-send.
CREATE FUNCTION notify.lease_due(channels text[], rows_max integer, lease_seconds integer)
    RETURNS TABLE (business_id uuid, notification_id uuid)
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        WITH heads AS (
            SELECT DISTINCT ON (q.business_id, q.channel, q.recipient)
                   q.id, q.next_attempt_at, q.lease_until, q.channel
              FROM notify.notifications q
             WHERE q.status = 'queued'
             ORDER BY q.business_id, q.channel, q.recipient, q.id
        ), due AS (
            SELECT h.id FROM heads h
             WHERE h.channel = ANY (channels)
               AND h.next_attempt_at <= now()
               AND (h.lease_until IS NULL OR h.lease_until < now())
             ORDER BY h.next_attempt_at
             LIMIT rows_max
        )
        UPDATE notify.notifications n
           SET lease_until = now() + make_interval(secs => lease_seconds),
               in_doubt = n.in_doubt + (n.lease_until IS NOT NULL)::integer,
               updated_at = now()
         WHERE n.id IN (SELECT id FROM due)
           AND n.status = 'queued'
           AND (n.lease_until IS NULL OR n.lease_until < now())
        RETURNING n.business_id, n.id
    $$;
REVOKE ALL ON FUNCTION notify.lease_due(text[], integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify.lease_due(text[], integer, integer) TO till_app;

-- Wakes the sender when a notification is queued (at commit).
CREATE FUNCTION notify.wake_sender() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notify_queue', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notifications_queued AFTER INSERT ON notify.notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notify.wake_sender();

-- An SMS provider's delivery receipts (Twilio's status callbacks), applied to the
-- notification whose provider id they name. A receipt can arrive before the sender has
-- recorded that id (the provider answered, the callback came at once): it is kept here
-- and applied when the sender records it. Both paths take the same advisory lock on
-- the provider id, so one of them always sees the other's commit.
CREATE INDEX notifications_by_provider_id ON notify.notifications (provider_id) WHERE channel = 'sms';

CREATE TABLE notify.early_receipts (
    provider_id text        PRIMARY KEY CHECK (char_length(provider_id) BETWEEN 1 AND 64),
    status      text        NOT NULL CHECK (status IN ('delivered', 'failed')),
    detail      text        CHECK (char_length(detail) <= 200),
    received_at timestamptz NOT NULL DEFAULT now()
);
-- No grants: only the functions below touch it.

CREATE FUNCTION notify.lock_provider_id(provider_id text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_advisory_xact_lock(hashtext('notify.provider_id'), hashtext(provider_id)) $$;

-- Applies a final receipt (`delivered`, or `failed` with its detail) to the SMS
-- notification with this provider id: only from `sent`, so a late or repeated receipt
-- changes nothing. Answers `applied`, `ended` (the notification had ended already), or
-- `kept` (no notification has the id yet).
CREATE FUNCTION notify.apply_receipt(receipt_provider_id text, receipt_status text, receipt_detail text)
    RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    BEGIN
        PERFORM notify.lock_provider_id(receipt_provider_id);
        UPDATE notify.notifications
           SET status = receipt_status,
               delivered_at = CASE WHEN receipt_status = 'delivered' THEN now() END,
               last_error = CASE WHEN receipt_status = 'failed' THEN receipt_detail ELSE last_error END,
               updated_at = now()
         WHERE channel = 'sms' AND provider_id = receipt_provider_id AND status = 'sent';
        IF FOUND THEN
            RETURN 'applied';
        END IF;
        IF EXISTS (SELECT 1 FROM notify.notifications WHERE channel = 'sms' AND provider_id = receipt_provider_id) THEN
            RETURN 'ended';
        END IF;
        INSERT INTO notify.early_receipts (provider_id, status, detail)
             VALUES (receipt_provider_id, receipt_status, receipt_detail)
        ON CONFLICT (provider_id) DO NOTHING;
        RETURN 'kept';
    END $$;
REVOKE ALL ON FUNCTION notify.apply_receipt(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify.apply_receipt(text, text, text) TO till_app;

-- The sender, having recorded an SMS `sent` with its provider id (under the same lock):
-- applies a receipt that arrived first, if one did.
CREATE FUNCTION notify.take_early_receipt(receipt_provider_id text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        early notify.early_receipts;
    BEGIN
        DELETE FROM notify.early_receipts WHERE provider_id = receipt_provider_id RETURNING * INTO early;
        IF FOUND THEN
            UPDATE notify.notifications
               SET status = early.status,
                   delivered_at = CASE WHEN early.status = 'delivered' THEN early.received_at END,
                   last_error = CASE WHEN early.status = 'failed' THEN early.detail ELSE last_error END,
                   updated_at = now()
             WHERE channel = 'sms' AND provider_id = receipt_provider_id AND status = 'sent';
        END IF;
    END $$;
REVOKE ALL ON FUNCTION notify.lock_provider_id(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify.take_early_receipt(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify.lock_provider_id(text) TO till_app;
GRANT EXECUTE ON FUNCTION notify.take_early_receipt(text) TO till_app;
