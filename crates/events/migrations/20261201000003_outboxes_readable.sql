-- The relay reads which outboxes to drain from here (every service's migration registers
-- its outbox with events.create_outbox), instead of from a list in the code that a new
-- service would have to remember to join.
GRANT SELECT ON events.outboxes TO till_app;
