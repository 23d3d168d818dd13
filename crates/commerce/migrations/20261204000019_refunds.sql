-- Refunds of paid orders, in full or in part, and the credit notes they issue. A refund
-- is asked for on the order (its lines and units, computed then, so two concurrent
-- refunds can never credit the same unit twice: each is computed under the order's
-- lock from what the refunds before it took), taken through payments by the saga's
-- worker, and, once the money is back, credited by a credit note numbered in its own
-- series, with the units restocked if asked — in one transaction.

ALTER TABLE commerce.orders ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0;
ALTER TABLE commerce.orders ADD CHECK (amount_refunded BETWEEN 0 AND total);
ALTER TABLE commerce.orders ADD CHECK (status <> 'refunded' OR amount_refunded = total);

CREATE TABLE commerce.order_refunds (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    order_id        uuid        NOT NULL REFERENCES commerce.orders (id),
    status          text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- [{"line": index in the order, "quantity": units}], and the amounts credited.
    lines           jsonb       NOT NULL,
    amount          bigint      NOT NULL CHECK (amount >= 1),
    restock         boolean     NOT NULL,
    reason          text        NOT NULL CHECK (reason IN ('duplicate', 'fraudulent', 'requested_by_customer')),
    refund_id       text        CHECK (refund_id ~ '^re_[0-9a-f]{32}$'),
    credit_note_id  uuid,
    failure_message text,
    attempts        integer     NOT NULL DEFAULT 0,
    next_step_at    timestamptz,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'pending') = (next_step_at IS NOT NULL)),
    CHECK ((status = 'succeeded') = (credit_note_id IS NOT NULL))
);
CREATE INDEX order_refunds_of_order ON commerce.order_refunds (order_id, id);
CREATE INDEX order_refunds_due ON commerce.order_refunds (next_step_at) WHERE next_step_at IS NOT NULL;

CREATE TABLE commerce.credit_notes (
    id          uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    order_id    uuid        NOT NULL REFERENCES commerce.orders (id),
    invoice_id  uuid        NOT NULL REFERENCES commerce.invoices (id),
    refund_id   uuid        NOT NULL UNIQUE REFERENCES commerce.order_refunds (id),
    series      text        NOT NULL,
    period      integer     NOT NULL,
    sequence    bigint      NOT NULL CHECK (sequence >= 1),
    number      text        NOT NULL CHECK (char_length(number) BETWEEN 1 AND 32),
    currency    text        NOT NULL,
    net_total   bigint      NOT NULL,
    tax_total   bigint      NOT NULL,
    total       bigint      NOT NULL,
    body        jsonb       NOT NULL,
    issued_at   timestamptz NOT NULL,
    UNIQUE (business_id, series, period, sequence),
    UNIQUE (business_id, number)
);
CREATE INDEX credit_notes_business_newest_first ON commerce.credit_notes (business_id, id DESC);
CREATE INDEX credit_notes_issued ON commerce.credit_notes (business_id, issued_at);

ALTER TABLE commerce.order_refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.credit_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY order_refunds_tenant ON commerce.order_refunds
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY credit_notes_tenant ON commerce.credit_notes
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
GRANT SELECT, INSERT, UPDATE ON commerce.order_refunds TO till_app;
GRANT SELECT, INSERT ON commerce.credit_notes TO till_app;

-- The worker's door to due refunds of every business, as for orders.
CREATE FUNCTION commerce.lease_due_refunds(rows_max integer, lease_seconds integer)
    RETURNS TABLE (business_id uuid, refund_id uuid)
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE commerce.order_refunds r
           SET lease_until = now() + make_interval(secs => lease_seconds)
         WHERE r.id IN (SELECT d.id FROM commerce.order_refunds d
                         WHERE d.next_step_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
                         ORDER BY d.next_step_at
                         LIMIT rows_max
                         FOR UPDATE SKIP LOCKED)
        RETURNING r.business_id, r.id
    $$;
REVOKE ALL ON FUNCTION commerce.lease_due_refunds(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION commerce.lease_due_refunds(integer, integer) TO till_app;
