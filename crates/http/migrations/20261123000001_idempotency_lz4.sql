-- Stored responses compressed with LZ4 instead of PostgreSQL's default pglz.
--
-- A response larger than about 2 kB (a `/v1/transfers/batch` answer holds every transfer
-- it created) is compressed when stored. Under `till bench ledger`'s batch phase (100
-- transfers per request), auto_explain showed the insert of 28 such responses taking
-- 11.9 ms of a 134 ms engine write with pglz (0.42 ms each), about as long as inserting
-- the 2 800 transfers' outbox events; with LZ4, 13 responses took 1.2 ms (0.09 ms each).
-- It applies to values stored from now on (older values stay pglz; both read back the
-- same).
ALTER TABLE api.idempotency_keys ALTER COLUMN response_body SET COMPRESSION lz4;
