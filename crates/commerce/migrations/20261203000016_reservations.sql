-- Reservations: stock held for a checkout. Making one adds to `stock.reserved` by a
-- conditional UPDATE per SKU (the stock's checks keep reserved <= on_hand); committing
-- turns it into a sale (on_hand and reserved both fall); releasing or expiring gives it
-- back. Each ends exactly once: every end is an UPDATE guarded by `status = 'active'`.

CREATE TABLE commerce.reservations (
    id          uuid        PRIMARY KEY,
    business_id uuid        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    reference   text        CHECK (char_length(reference) BETWEEN 1 AND 200),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    created_by  text        NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'active') = (ended_at IS NULL))
);
CREATE INDEX reservations_business_newest_first ON commerce.reservations (business_id, id DESC);
CREATE INDEX reservations_expiring ON commerce.reservations (expires_at) WHERE status = 'active';

CREATE TABLE commerce.reservation_lines (
    reservation_id uuid   NOT NULL REFERENCES commerce.reservations (id),
    business_id    uuid   NOT NULL,
    sku            text   NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    PRIMARY KEY (reservation_id, sku),
    FOREIGN KEY (business_id, sku) REFERENCES commerce.stock (business_id, sku)
);

ALTER TABLE commerce.reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.reservation_lines ENABLE ROW LEVEL SECURITY;
CREATE POLICY reservations_tenant ON commerce.reservations
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());
CREATE POLICY reservation_lines_tenant ON commerce.reservation_lines
    USING (business_id = till.current_business_id()) WITH CHECK (business_id = till.current_business_id());

GRANT SELECT, INSERT, UPDATE ON commerce.reservations TO till_app;
GRANT SELECT, INSERT ON commerce.reservation_lines TO till_app;

-- The sweeper's one cross-tenant door: which active reservations of any business are past
-- their expiry. It expires each in a transaction scoped to its business.
CREATE FUNCTION commerce.expired_reservations(rows_max integer)
    RETURNS TABLE (business_id uuid, reservation_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT r.business_id, r.id FROM commerce.reservations r
         WHERE r.status = 'active' AND r.expires_at <= now()
         ORDER BY r.expires_at
         LIMIT rows_max
    $$;
REVOKE ALL ON FUNCTION commerce.expired_reservations(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION commerce.expired_reservations(integer) TO till_app;
