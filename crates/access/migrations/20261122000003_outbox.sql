-- The access service's transactional outbox: events are written here in the same
-- transaction as the state change they describe; the relay moves them to the event log.
SELECT events.create_outbox('access');
