-- Orders and the checkout saga, invoices with numbers that have no gaps, and what an
-- invoice needs of the seller that the business's profile does not hold.

-- A reservation whose checkout has an authorised payment is pinned: it no longer
-- expires, since the payment is about to be captured against it; it ends when the order
-- is paid (committed) or its payment fails (released).
ALTER TABLE commerce.reservations ADD COLUMN pinned_at timestamptz;
ALTER TABLE commerce.reservations ADD CHECK (pinned_at IS NULL OR status IN ('active', 'committed', 'released'));

CREATE OR REPLACE FUNCTION commerce.expired_reservations(rows_max integer)
    RETURNS TABLE (business_id uuid, reservation_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT r.business_id, r.id FROM commerce.reservations r
         WHERE r.status = 'active' AND r.expires_at <= now() AND r.pinned_at IS NULL
         ORDER BY r.expires_at
         LIMIT rows_max
    $$;

-- What a business's invoices say about it beyond its legal name and tax number (VAT
-- Regulations 1995 reg. 14 and CGST Rule 46 ask for the supplier's address), and how
-- they are numbered.
CREATE TABLE commerce.invoice_settings (
    business_id         uuid        PRIMARY KEY,
    address             text[]      NOT NULL CHECK (cardinality(address) BETWEEN 1 AND 6),
    invoice_series      text        NOT NULL CHECK (invoice_series ~ '^[A-Z0-9]{1,6}$'),
    credit_note_series  text        NOT NULL CHECK (credit_note_series ~ '^[A-Z0-9]{1,6}$'),
    simplified_invoices boolean     NOT NULL,
    version             integer     NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (invoice_series <> credit_note_series)
);

-- The last number given in each series: per business, kind and series, and per
-- financial year in India (`period` is the year it starts in; 0 where numbers never
-- restart). Taking a number is an upsert that increments this row, in the transaction
-- that issues the document: concurrent issuers queue on the row's lock, and a
-- transaction that rolls back takes its increment with it, so numbers have no gaps.
CREATE TABLE commerce.document_counters (
    business_id uuid    NOT NULL,
    kind        text    NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    series      text    NOT NULL,
    period      integer NOT NULL CHECK (period >= 0),
    last_number bigint  NOT NULL CHECK (last_number >= 1),
    PRIMARY KEY (business_id, kind, series, period)
);

CREATE TABLE commerce.orders (
    id                  uuid        PRIMARY KEY,
    business_id         uuid        NOT NULL,
    status              text        NOT NULL
                                    CHECK (status IN ('pending', 'paid', 'payment_failed', 'canceled', 'refunded')),
    -- The saga's next step; `done` once the order's status is final for the saga.
    step                text        NOT NULL CHECK (step IN ('authorize', 'capture', 'complete', 'void', 'done')),
    -- Where a void leads: the status the order ends in once its authorisation is voided
    -- and its stock released.
    void_to             text        CHECK (void_to IN ('payment_failed', 'canceled')),
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total               bigint      NOT NULL CHECK (total BETWEEN 1 AND 99999999),
    quote_id            uuid        NOT NULL,
    reservation_id      uuid        NOT NULL REFERENCES commerce.reservations (id),
    customer            jsonb       NOT NULL,
    payment_method      jsonb       NOT NULL,
    coupon_ids          uuid[]      NOT NULL DEFAULT '{}',
    payment_intent_id   text        CHECK (payment_intent_id ~ '^pi_[0-9a-f]{32}$'),
    invoice_id          uuid,
    failure_code        text,
    failure_message     text,
    cancel_requested_at timestamptz,
    attempts            integer     NOT NULL DEFAULT 0,
    next_step_at        timestamptz,
    lease_until         timestamptz,
    events_announced    integer     NOT NULL DEFAULT 1,
    version             integer     NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((step = 'done') = (next_step_at IS NULL)),
    CHECK ((step = 'void') = (void_to IS NOT NULL)),
    CHECK (status = 'pending' OR step = 'done'),
    CHECK ((status IN ('paid', 'refunded')) = (invoice_id IS NOT NULL))
);
CREATE INDEX orders_business_newest_first ON commerce.orders (business_id, id DESC);
CREATE INDEX orders_due ON commerce.orders (next_step_at) WHERE next_step_at IS NOT NULL;

-- Each step the saga took, with its outcome, in order.
CREATE TABLE commerce.order_steps (
    order_id    uuid        NOT NULL REFERENCES commerce.orders (id),
    business_id uuid        NOT NULL,
    position    integer     NOT NULL CHECK (position >= 1),
    step        text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'retrying', 'compensated')),
    detail      text        NOT NULL CHECK (char_length(detail) <= 1000),
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, position)
);

CREATE TABLE commerce.invoices (
    id          uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    order_id    uuid        NOT NULL UNIQUE REFERENCES commerce.orders (id),
    series      text        NOT NULL,
    period      integer     NOT NULL,
    sequence    bigint      NOT NULL CHECK (sequence >= 1),
    number      text        NOT NULL CHECK (char_length(number) BETWEEN 1 AND 32),
    currency    text        NOT NULL,
    net_total   bigint      NOT NULL,
    tax_total   bigint      NOT NULL,
    total       bigint      NOT NULL,
    -- The document as issued, as `GET /v1/invoices/{id}` returns it: an invoice is never
    -- changed once issued (a credit note corrects it).
    body        jsonb       NOT NULL,
    issued_at   timestamptz NOT NULL,
    UNIQUE (business_id, series, period, sequence),
    UNIQUE (business_id, number)
);
CREATE INDEX invoices_business_newest_first ON commerce.invoices (business_id, id DESC);
CREATE INDEX invoices_issued ON commerce.invoices (business_id, issued_at);

ALTER TABLE commerce.invoice_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.document_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.order_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY invoice_settings_tenant ON commerce.invoice_settings
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY document_counters_tenant ON commerce.document_counters
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY orders_tenant ON commerce.orders
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY order_steps_tenant ON commerce.order_steps
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY invoices_tenant ON commerce.invoices
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT SELECT, INSERT, UPDATE ON commerce.invoice_settings TO till_app;
GRANT SELECT, INSERT, UPDATE ON commerce.document_counters TO till_app;
GRANT SELECT, INSERT, UPDATE ON commerce.orders TO till_app;
GRANT SELECT, INSERT ON commerce.order_steps TO till_app;
GRANT SELECT, INSERT ON commerce.invoices TO till_app;

-- The saga worker's one cross-tenant door: it leases the orders whose next step is due,
-- of every business, and then works each in a transaction scoped to its business.
CREATE FUNCTION commerce.lease_due_orders(rows_max integer, lease_seconds integer)
    RETURNS TABLE (business_id uuid, order_id uuid)
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        UPDATE commerce.orders o
           SET lease_until = now() + make_interval(secs => lease_seconds)
         WHERE o.id IN (SELECT d.id FROM commerce.orders d
                         WHERE d.next_step_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
                         ORDER BY d.next_step_at
                         LIMIT rows_max
                         FOR UPDATE SKIP LOCKED)
        RETURNING o.business_id, o.id
    $$;
REVOKE ALL ON FUNCTION commerce.lease_due_orders(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION commerce.lease_due_orders(integer, integer) TO till_app;
