-- The access service's transactional outbox: events are written here in the same
-- transaction as the state change they describe, and the relay (events.relay) moves
-- them to the event log. till_app may only insert, for its own business.
CREATE TABLE access.outbox (
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

ALTER TABLE access.outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY outbox_tenant ON access.outbox FOR INSERT WITH CHECK (business_id = till.current_business_id());
GRANT INSERT ON access.outbox TO till_app;
GRANT USAGE ON SEQUENCE access.outbox_position_seq TO till_app;

CREATE TRIGGER outbox_notify AFTER INSERT ON access.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION events.notify_outbox();

INSERT INTO events.outboxes (name) VALUES ('access.outbox');
