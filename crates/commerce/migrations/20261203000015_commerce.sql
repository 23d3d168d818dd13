-- The catalog, stock and quotes. Stock is one row per (business, SKU) whose checks make
-- overselling impossible whatever the callers do: `reserved` never exceeds `on_hand`, and
-- neither goes below zero, so `available` (on_hand - reserved) is never negative. Every
-- change is a conditional UPDATE of that row, so concurrent changes queue on its lock and
-- each sees the one before it (no check-then-act); every change leaves a movement.

CREATE TABLE commerce.products (
    id              uuid        PRIMARY KEY,
    business_id     uuid        NOT NULL,
    name            text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description     text        CHECK (char_length(description) <= 1000),
    sku             text        NOT NULL CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    tax_treatment   text        NOT NULL CHECK (tax_treatment IN ('standard', 'reduced', 'zero', 'exempt', 'gst')),
    hsn_code        text        CHECK (hsn_code ~ '^([0-9]{4}|[0-9]{6}|[0-9]{8})$'),
    gst_rate_bps    integer     CHECK (gst_rate_bps BETWEEN 0 AND 10000),
    track_inventory boolean     NOT NULL,
    active          boolean     NOT NULL DEFAULT true,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (business_id, sku),
    CHECK ((tax_treatment = 'gst') = (hsn_code IS NOT NULL AND gst_rate_bps IS NOT NULL)),
    CHECK (tax_treatment = 'gst' OR (hsn_code IS NULL AND gst_rate_bps IS NULL))
);
CREATE INDEX products_business_newest_first ON commerce.products (business_id, id DESC);

-- A product's price in each currency it is sold in.
CREATE TABLE commerce.product_prices (
    product_id    uuid    NOT NULL REFERENCES commerce.products (id),
    business_id   uuid    NOT NULL,
    currency      text    NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    unit_amount   bigint  NOT NULL CHECK (unit_amount BETWEEN 0 AND 100000000000),
    tax_inclusive boolean NOT NULL,
    PRIMARY KEY (product_id, currency)
);

-- Stock per SKU of a product that tracks inventory.
CREATE TABLE commerce.stock (
    business_id uuid        NOT NULL,
    sku         text        NOT NULL,
    product_id  uuid        NOT NULL UNIQUE REFERENCES commerce.products (id),
    on_hand     bigint      NOT NULL DEFAULT 0 CHECK (on_hand BETWEEN 0 AND 1000000000000),
    reserved    bigint      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    version     integer     NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, sku),
    CHECK (reserved <= on_hand)
);

-- Every change to stock, in order: an adjustment (counted, received, damaged), and, with
-- checkout, a sale or a restock.
CREATE TABLE commerce.stock_movements (
    id          uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    sku         text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('adjustment', 'sale', 'restock')),
    delta       bigint      NOT NULL CHECK (delta <> 0),
    on_hand     bigint      NOT NULL,
    -- The stock row's version after the change: the order the changes were applied in
    -- (they queue on the row's lock), which the ids, made before the lock, are not.
    stock_version integer   NOT NULL,
    reason      text        CHECK (char_length(reason) BETWEEN 1 AND 200),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (business_id, sku) REFERENCES commerce.stock (business_id, sku)
);
CREATE UNIQUE INDEX stock_movements_in_order ON commerce.stock_movements (business_id, sku, stock_version DESC);

-- A quote as it was given: the engine's answer, kept so that what the buyer was shown is
-- what an order made from it charges.
CREATE TABLE commerce.quotes (
    id          uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total       bigint      NOT NULL CHECK (total >= 0),
    tax_point   date        NOT NULL,
    body        jsonb       NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE commerce.products ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.product_prices ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.stock ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.stock_movements ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.quotes ENABLE ROW LEVEL SECURITY;
CREATE POLICY products_tenant ON commerce.products
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY product_prices_tenant ON commerce.product_prices
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY stock_tenant ON commerce.stock
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY stock_movements_tenant ON commerce.stock_movements
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY quotes_tenant ON commerce.quotes
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT USAGE ON SCHEMA commerce TO till_app;
GRANT SELECT, INSERT, UPDATE ON commerce.products TO till_app;
GRANT SELECT, INSERT, DELETE ON commerce.product_prices TO till_app;
GRANT SELECT, INSERT, UPDATE ON commerce.stock TO till_app;
GRANT SELECT, INSERT ON commerce.stock_movements TO till_app;
GRANT SELECT, INSERT ON commerce.quotes TO till_app;

SELECT events.create_outbox('commerce');
