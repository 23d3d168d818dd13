-- A recovery point can be expedited: something learned the outside party's outcome (a
-- gateway's webhook) and the request should be resumed now rather than after the grace.
-- A row whose lease was let go becomes due at once; a row still held is due as soon as
-- its request lets it go undecided.
ALTER TABLE api.recovery_points ADD COLUMN expedited boolean NOT NULL DEFAULT false;
GRANT UPDATE (expedited) ON api.recovery_points TO till_app;
