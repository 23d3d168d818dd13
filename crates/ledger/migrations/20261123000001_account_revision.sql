-- Every change to an account row bumps its revision, so a writer that read an account
-- earlier can tell, when it writes, whether anyone changed it since.
--
-- The engine keeps the accounts it last committed in memory and checks each one's
-- revision in the statement that writes the batch, instead of reading and locking every
-- account again at the start of every batch (see `engine.rs`). `version` cannot serve:
-- it is the API's optimistic-concurrency token for `PATCH` (`If-Match`), which a
-- transfer must not invalidate; and the totals cannot either, since pending totals go
-- back to earlier values (a hold, then its void).
--
-- A constant default: PostgreSQL adds the column without rewriting the table.
ALTER TABLE ledger.accounts ADD COLUMN revision bigint NOT NULL DEFAULT 0;
GRANT UPDATE (revision) ON ledger.accounts TO till_app;
