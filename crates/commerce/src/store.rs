//! The commerce schema's SQL: products and their prices, stock and its movements,
//! quotes, and events.

use sqlx::PgConnection;
use till_kit::BusinessId;
use time::OffsetDateTime;
use uuid::Uuid;

pub const OUTBOX: &str = "commerce.outbox";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub sku: String,
    pub tax_treatment: String,
    pub hsn_code: Option<String>,
    pub gst_rate_bps: Option<i32>,
    pub track_inventory: bool,
    pub active: bool,
    pub metadata: serde_json::Value,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const PRODUCT_COLUMNS: &str = "id, business_id, name, description, sku, tax_treatment, hsn_code, gst_rate_bps, \
     track_inventory, active, metadata, version, created_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PriceRow {
    pub product_id: Uuid,
    pub currency: String,
    pub unit_amount: i64,
    pub tax_inclusive: bool,
}

/// A product's tax treatment as stored: the treatment, and for GST its HSN and rate.
pub struct StoredTreatment<'a> {
    pub tax_treatment: &'a str,
    pub hsn_code: Option<&'a str>,
    pub gst_rate_bps: Option<i32>,
}

pub struct NewProduct<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub sku: &'a str,
    pub treatment: StoredTreatment<'a>,
    pub track_inventory: bool,
    pub metadata: serde_json::Value,
}

/// Inserts the product (and its stock row, at zero, if it tracks inventory); `None` if
/// the business has a product with this SKU already.
pub async fn insert_product(
    connection: &mut PgConnection,
    new: &NewProduct<'_>,
) -> Result<Option<ProductRow>, sqlx::Error> {
    let row: Option<ProductRow> = sqlx::query_as(&format!(
        "INSERT INTO commerce.products (id, business_id, name, description, sku, tax_treatment, hsn_code, gst_rate_bps,
             track_inventory, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (business_id, sku) DO NOTHING
         RETURNING {PRODUCT_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.name)
    .bind(new.description)
    .bind(new.sku)
    .bind(new.treatment.tax_treatment)
    .bind(new.treatment.hsn_code)
    .bind(new.treatment.gst_rate_bps)
    .bind(new.track_inventory)
    .bind(&new.metadata)
    .fetch_optional(&mut *connection)
    .await?;
    if row.is_some() && new.track_inventory {
        sqlx::query("INSERT INTO commerce.stock (business_id, sku, product_id) VALUES ($1, $2, $3)")
            .bind(new.business.as_uuid())
            .bind(new.sku)
            .bind(new.id)
            .execute(&mut *connection)
            .await?;
    }
    Ok(row)
}

/// Replaces the product's prices with `prices` (currency, unit amount, tax inclusive).
pub async fn set_prices(
    connection: &mut PgConnection,
    business: BusinessId,
    product: Uuid,
    prices: &[(String, i64, bool)],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM commerce.product_prices WHERE product_id = $1")
        .bind(product)
        .execute(&mut *connection)
        .await?;
    let currencies: Vec<&str> = prices.iter().map(|(currency, _, _)| currency.as_str()).collect();
    let amounts: Vec<i64> = prices.iter().map(|(_, amount, _)| *amount).collect();
    let inclusive: Vec<bool> = prices.iter().map(|(_, _, inclusive)| *inclusive).collect();
    sqlx::query(
        "INSERT INTO commerce.product_prices (product_id, business_id, currency, unit_amount, tax_inclusive)
         SELECT $1, $2, currency, unit_amount, tax_inclusive
           FROM unnest($3::text[], $4::bigint[], $5::boolean[]) AS p (currency, unit_amount, tax_inclusive)",
    )
    .bind(product)
    .bind(business.as_uuid())
    .bind(&currencies)
    .bind(&amounts)
    .bind(&inclusive)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn find_product(connection: &mut PgConnection, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PRODUCT_COLUMNS} FROM commerce.products WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The product, locked for an update.
pub async fn lock_product(connection: &mut PgConnection, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PRODUCT_COLUMNS} FROM commerce.products WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The products of these ids that exist (in no particular order).
pub async fn find_products(connection: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PRODUCT_COLUMNS} FROM commerce.products WHERE id = ANY($1)"))
        .bind(ids)
        .fetch_all(connection)
        .await
}

pub async fn list_products(
    connection: &mut PgConnection,
    business: BusinessId,
    sku: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM commerce.products
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) AND ($4::text IS NULL OR sku = $4)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .bind(sku)
    .fetch_all(connection)
    .await
}

/// The prices of these products, by product then currency.
pub async fn prices_of(connection: &mut PgConnection, products: &[Uuid]) -> Result<Vec<PriceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT product_id, currency, unit_amount, tax_inclusive FROM commerce.product_prices
          WHERE product_id = ANY($1) ORDER BY product_id, currency",
    )
    .bind(products)
    .fetch_all(connection)
    .await
}

pub struct ProductChanges<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub treatment: StoredTreatment<'a>,
    pub active: bool,
    pub metadata: &'a serde_json::Value,
}

pub async fn update_product(
    connection: &mut PgConnection,
    id: Uuid,
    changes: &ProductChanges<'_>,
) -> Result<ProductRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE commerce.products
            SET name = $2, description = $3, tax_treatment = $4, hsn_code = $5, gst_rate_bps = $6, active = $7,
                metadata = $8, version = version + 1, updated_at = now()
          WHERE id = $1
          RETURNING {PRODUCT_COLUMNS}"
    ))
    .bind(id)
    .bind(changes.name)
    .bind(changes.description)
    .bind(changes.treatment.tax_treatment)
    .bind(changes.treatment.hsn_code)
    .bind(changes.treatment.gst_rate_bps)
    .bind(changes.active)
    .bind(changes.metadata)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StockRow {
    pub business_id: Uuid,
    pub sku: String,
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i32,
    pub updated_at: OffsetDateTime,
}

const STOCK_COLUMNS: &str = "business_id, sku, product_id, on_hand, reserved, version, updated_at";

pub async fn find_stock(
    connection: &mut PgConnection,
    business: BusinessId,
    sku: &str,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {STOCK_COLUMNS} FROM commerce.stock WHERE business_id = $1 AND sku = $2"))
        .bind(business.as_uuid())
        .bind(sku)
        .fetch_optional(connection)
        .await
}

/// The largest stock a SKU may hold (the table's check).
pub const ON_HAND_MAX: i64 = 1_000_000_000_000;

/// Adds `delta` to the SKU's stock on hand if the result stays within `reserved ..=
/// ON_HAND_MAX`, and records the movement; `None` if it would not (or there is no such
/// stock). The condition is part of the UPDATE: a concurrent change waits for this row's
/// lock and then re-checks it against what this one left, so no interleaving can take
/// stock below what is reserved.
pub async fn adjust_stock(
    connection: &mut PgConnection,
    business: BusinessId,
    sku: &str,
    movement: Uuid,
    delta: i64,
    reason: &str,
    created_by: &str,
) -> Result<Option<StockRow>, sqlx::Error> {
    change_stock(connection, business, sku, movement, delta, "adjustment", reason, created_by).await
}

/// Units a refund brings back to stock, with a `restock` movement.
pub async fn restock(
    connection: &mut PgConnection,
    business: BusinessId,
    sku: &str,
    quantity: i64,
    reason: &str,
    created_by: &str,
) -> Result<Option<StockRow>, sqlx::Error> {
    let movement = crate::MovementId::generate().as_uuid();
    change_stock(connection, business, sku, movement, quantity, "restock", reason, created_by).await
}

#[allow(clippy::too_many_arguments)]
async fn change_stock(
    connection: &mut PgConnection,
    business: BusinessId,
    sku: &str,
    movement: Uuid,
    delta: i64,
    kind: &str,
    reason: &str,
    created_by: &str,
) -> Result<Option<StockRow>, sqlx::Error> {
    let row: Option<StockRow> = sqlx::query_as(&format!(
        "UPDATE commerce.stock SET on_hand = on_hand + $3, version = version + 1, updated_at = now()
          WHERE business_id = $1 AND sku = $2 AND on_hand + $3 >= reserved AND on_hand + $3 <= $4
          RETURNING {STOCK_COLUMNS}"
    ))
    .bind(business.as_uuid())
    .bind(sku)
    .bind(delta)
    .bind(ON_HAND_MAX)
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(stock) = &row {
        sqlx::query(
            "INSERT INTO commerce.stock_movements (id, business_id, sku, kind, delta, on_hand, stock_version, reason,
                 created_by)
             VALUES ($1, $2, $3, $9, $4, $5, $8, $6, $7)",
        )
        .bind(movement)
        .bind(business.as_uuid())
        .bind(sku)
        .bind(delta)
        .bind(stock.on_hand)
        .bind(reason)
        .bind(created_by)
        .bind(stock.version)
        .bind(kind)
        .execute(connection)
        .await?;
    }
    Ok(row)
}

pub struct NewQuote<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub currency: &'a str,
    pub total: i64,
    pub tax_point: time::Date,
    pub body: &'a serde_json::Value,
    pub expires_at: OffsetDateTime,
}

pub async fn insert_quote(connection: &mut PgConnection, new: &NewQuote<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO commerce.quotes (id, business_id, currency, total, tax_point, body, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.currency)
    .bind(new.total)
    .bind(new.tax_point)
    .bind(new.body)
    .bind(new.expires_at)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn find_quote(connection: &mut PgConnection, id: Uuid) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM commerce.quotes WHERE id = $1").bind(id).fetch_optional(connection).await
}

/// The bodies of these quotes, by id.
pub async fn quotes_by_id(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as("SELECT id, body FROM commerce.quotes WHERE id = ANY($1)").bind(ids).fetch_all(connection).await
}

/// Appends one event about a commerce resource to the outbox, in the caller's transaction.
pub async fn announce(
    connection: &mut PgConnection,
    business: Uuid,
    resource_id: String,
    version: i32,
    at: OffsetDateTime,
    event_type: till_outbox::EventType,
    data: &impl serde::Serialize,
) -> Result<(), till_outbox::AnnounceError> {
    let business = BusinessId::from_uuid(business);
    till_outbox::announce(connection, OUTBOX, business, resource_id, i64::from(version), at, event_type, data).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReservationRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub status: String,
    pub reference: Option<String>,
    pub expires_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    pub pinned_at: Option<OffsetDateTime>,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const RESERVATION_COLUMNS: &str =
    "id, business_id, status, reference, expires_at, ended_at, pinned_at, version, created_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReservationLineRow {
    pub reservation_id: Uuid,
    pub sku: String,
    pub quantity: i64,
}

pub struct NewReservation<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub reference: Option<&'a str>,
    pub expires_in_seconds: i32,
    pub created_by: &'a str,
}

pub async fn insert_reservation(
    connection: &mut PgConnection,
    new: &NewReservation<'_>,
) -> Result<ReservationRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO commerce.reservations (id, business_id, status, reference, expires_at, created_by)
         VALUES ($1, $2, 'active', $3, now() + make_interval(secs => $4), $5)
         RETURNING {RESERVATION_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.reference)
    .bind(new.expires_in_seconds)
    .bind(new.created_by)
    .fetch_one(connection)
    .await
}

/// Holds `quantity` of the SKU for the reservation if that many are available, and
/// records the line; `None` if they are not (or there is no such stock). As with an
/// adjustment, the condition is in the UPDATE, so concurrent reservations of the last
/// units queue on the stock row and only those that still fit are taken.
pub async fn reserve_line(
    connection: &mut PgConnection,
    business: BusinessId,
    reservation: Uuid,
    sku: &str,
    quantity: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    let row: Option<StockRow> = sqlx::query_as(&format!(
        "UPDATE commerce.stock SET reserved = reserved + $3, version = version + 1, updated_at = now()
          WHERE business_id = $1 AND sku = $2 AND on_hand - reserved >= $3
          RETURNING {STOCK_COLUMNS}"
    ))
    .bind(business.as_uuid())
    .bind(sku)
    .bind(quantity)
    .fetch_optional(&mut *connection)
    .await?;
    if row.is_some() {
        sqlx::query(
            "INSERT INTO commerce.reservation_lines (reservation_id, business_id, sku, quantity) VALUES ($1, $2, $3, $4)",
        )
        .bind(reservation)
        .bind(business.as_uuid())
        .bind(sku)
        .bind(quantity)
        .execute(connection)
        .await?;
    }
    Ok(row)
}

pub async fn find_reservation(connection: &mut PgConnection, id: Uuid) -> Result<Option<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {RESERVATION_COLUMNS} FROM commerce.reservations WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The lines of a reservation, by SKU: the order every change to their stock takes
/// them in, so that two reservations over the same SKUs never deadlock.
pub async fn reservation_lines(
    connection: &mut PgConnection,
    reservation: Uuid,
) -> Result<Vec<ReservationLineRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT reservation_id, sku, quantity FROM commerce.reservation_lines WHERE reservation_id = $1 ORDER BY sku",
    )
    .bind(reservation)
    .fetch_all(connection)
    .await
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Paid for: the units are sold (on hand and reserved both fall).
    Committed,
    /// Given back before its expiry.
    Released,
    /// Its time ran out (the sweeper).
    Expired,
}

impl Ending {
    pub fn status(self) -> &'static str {
        match self {
            Ending::Committed => "committed",
            Ending::Released => "released",
            Ending::Expired => "expired",
        }
    }
}

/// Ends an active reservation, once: `None` if it is not active (or, to commit or
/// release it, if its expiry has passed and it is not pinned; to expire it, if it has
/// not, or it is pinned). Its stock is given back or sold in the same transaction, line
/// by line in SKU order.
pub async fn end_reservation(
    connection: &mut PgConnection,
    id: Uuid,
    ending: Ending,
    actor: &str,
) -> Result<Option<ReservationRow>, sqlx::Error> {
    let row: Option<ReservationRow> = sqlx::query_as(&format!(
        "UPDATE commerce.reservations SET status = $2, ended_at = now(), version = version + 1, updated_at = now()
          WHERE id = $1 AND status = 'active' AND (expires_at <= now() AND pinned_at IS NULL) = $3
          RETURNING {RESERVATION_COLUMNS}"
    ))
    .bind(id)
    .bind(ending.status())
    .bind(ending == Ending::Expired)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(reservation) = row else {
        return Ok(None);
    };
    let sold = ending == Ending::Committed;
    for line in reservation_lines(connection, id).await? {
        let stock: StockRow = sqlx::query_as(&format!(
            "UPDATE commerce.stock
                SET reserved = reserved - $3, on_hand = on_hand - CASE WHEN $4 THEN $3 ELSE 0 END,
                    version = version + 1, updated_at = now()
              WHERE business_id = $1 AND sku = $2
              RETURNING {STOCK_COLUMNS}"
        ))
        .bind(reservation.business_id)
        .bind(&line.sku)
        .bind(line.quantity)
        .bind(sold)
        .fetch_one(&mut *connection)
        .await?;
        if sold {
            sqlx::query(
                "INSERT INTO commerce.stock_movements (id, business_id, sku, kind, delta, on_hand, stock_version, reason,
                     created_by)
                 VALUES ($1, $2, $3, 'sale', $4, $5, $8, $6, $7)",
            )
            .bind(crate::MovementId::generate().as_uuid())
            .bind(reservation.business_id)
            .bind(&line.sku)
            .bind(line.quantity.saturating_neg())
            .bind(stock.on_hand)
            .bind(format!("reservation {}", crate::ReservationId::from_uuid(id)))
            .bind(actor)
            .bind(stock.version)
            .execute(&mut *connection)
            .await?;
        }
    }
    Ok(Some(reservation))
}

/// Pins an active reservation whose expiry has not passed: from now on it does not
/// expire (its checkout's payment is authorised and about to be captured against it).
/// `None` if it has ended or expired: the sweeper and this UPDATE meet on the row's
/// lock, so exactly one of them wins.
pub async fn pin_reservation(connection: &mut PgConnection, id: Uuid) -> Result<Option<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE commerce.reservations SET pinned_at = now(), version = version + 1, updated_at = now()
          WHERE id = $1 AND status = 'active' AND expires_at > now() AND pinned_at IS NULL
          RETURNING {RESERVATION_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// Active reservations of any business whose expiry has passed (the sweeper's listing).
pub async fn expired_reservations(pool: &sqlx::PgPool, rows_max: i32) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT business_id, reservation_id FROM commerce.expired_reservations($1)")
        .bind(rows_max)
        .fetch_all(pool)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CouponRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub code: String,
    pub percent_bps: Option<i32>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub max_redemptions: Option<i32>,
    pub redemptions: i32,
    pub active: bool,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COUPON_COLUMNS: &str = "id, business_id, code, percent_bps, amount, currency, valid_from, valid_until, \
     max_redemptions, redemptions, active, version, created_at, updated_at";

pub struct NewCoupon<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub code: &'a str,
    pub percent_bps: Option<i32>,
    pub amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub max_redemptions: Option<i32>,
}

/// Inserts the coupon; `None` if the business has one with this code already.
pub async fn insert_coupon(
    connection: &mut PgConnection,
    new: &NewCoupon<'_>,
) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO commerce.coupons (id, business_id, code, percent_bps, amount, currency, valid_from, valid_until,
             max_redemptions)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (business_id, code) DO NOTHING
         RETURNING {COUPON_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.code)
    .bind(new.percent_bps)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.valid_from)
    .bind(new.valid_until)
    .bind(new.max_redemptions)
    .fetch_optional(connection)
    .await
}

pub async fn find_coupon(connection: &mut PgConnection, id: Uuid) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COUPON_COLUMNS} FROM commerce.coupons WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The business's coupons of these codes (in no particular order).
pub async fn coupons_by_code(
    connection: &mut PgConnection,
    business: BusinessId,
    codes: &[String],
) -> Result<Vec<CouponRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COUPON_COLUMNS} FROM commerce.coupons WHERE business_id = $1 AND code = ANY($2)"))
        .bind(business.as_uuid())
        .bind(codes)
        .fetch_all(connection)
        .await
}

pub async fn list_coupons(
    connection: &mut PgConnection,
    business: BusinessId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<CouponRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS} FROM commerce.coupons
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

pub struct CouponChanges {
    pub active: bool,
    pub valid_until: Option<OffsetDateTime>,
    pub max_redemptions: Option<i32>,
}

/// Changes a coupon at `version`; `None` if it is at another version by now or the
/// change breaks a check (a limit below what was redeemed, an end before the start),
/// which the caller reads back to explain.
pub async fn update_coupon(
    connection: &mut PgConnection,
    id: Uuid,
    version: i32,
    changes: &CouponChanges,
) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE commerce.coupons
            SET active = $2, valid_until = $3, max_redemptions = $4, version = version + 1, updated_at = now()
          WHERE id = $1 AND version = $5
            AND ($4::integer IS NULL OR redemptions <= $4)
            AND ($3::timestamptz IS NULL OR valid_from IS NULL OR valid_from < $3)
          RETURNING {COUPON_COLUMNS}"
    ))
    .bind(id)
    .bind(changes.active)
    .bind(changes.valid_until)
    .bind(changes.max_redemptions)
    .bind(version)
    .fetch_optional(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MovementRow {
    pub id: Uuid,
    pub sku: String,
    pub kind: String,
    pub delta: i64,
    pub on_hand: i64,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

/// A SKU's movements, last applied first (by the stock's version after each; a
/// movement's id, made before the stock row was locked, does not order them).
pub async fn list_movements(
    connection: &mut PgConnection,
    business: BusinessId,
    sku: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MovementRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, sku, kind, delta, on_hand, reason, created_by, created_at FROM commerce.stock_movements
          WHERE business_id = $1 AND sku = $2
            AND ($3::uuid IS NULL
                 OR stock_version < (SELECT m.stock_version FROM commerce.stock_movements m WHERE m.id = $3))
          ORDER BY stock_version DESC LIMIT $4",
    )
    .bind(business.as_uuid())
    .bind(sku)
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// The business's reservations, newest first; `status` keeps one status only.
pub async fn list_reservations(
    connection: &mut PgConnection,
    business: BusinessId,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM commerce.reservations
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) AND ($4::text IS NULL OR status = $4)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .bind(status)
    .fetch_all(connection)
    .await
}

/// The lines of these reservations, by reservation then SKU.
pub async fn lines_of_reservations(
    connection: &mut PgConnection,
    reservations: &[Uuid],
) -> Result<Vec<ReservationLineRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT reservation_id, sku, quantity FROM commerce.reservation_lines
          WHERE reservation_id = ANY($1) ORDER BY reservation_id, sku",
    )
    .bind(reservations)
    .fetch_all(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub status: String,
    pub step: String,
    pub void_to: Option<String>,
    pub currency: String,
    pub total: i64,
    pub quote_id: Uuid,
    pub reservation_id: Uuid,
    pub customer: serde_json::Value,
    pub payment_method: serde_json::Value,
    pub coupon_ids: Vec<Uuid>,
    pub payment_intent_id: Option<String>,
    pub invoice_id: Option<Uuid>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub cancel_requested_at: Option<OffsetDateTime>,
    pub attempts: i32,
    pub next_step_at: Option<OffsetDateTime>,
    pub events_announced: i32,
    pub amount_refunded: i64,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const ORDER_COLUMNS: &str =
    "id, business_id, status, step, void_to, currency, total, quote_id, reservation_id, customer,
    payment_method, coupon_ids, payment_intent_id, invoice_id, failure_code, failure_message, cancel_requested_at,
    attempts, next_step_at, events_announced, amount_refunded, version, created_at, updated_at";

pub struct NewOrder<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub currency: &'a str,
    pub total: i64,
    pub quote_id: Uuid,
    pub reservation_id: Uuid,
    pub customer: &'a serde_json::Value,
    pub payment_method: &'a serde_json::Value,
    pub coupon_ids: &'a [Uuid],
}

/// A new order, pending, whose first step (the authorisation) is due at once.
pub async fn insert_order(connection: &mut PgConnection, new: &NewOrder<'_>) -> Result<OrderRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO commerce.orders (id, business_id, status, step, currency, total, quote_id, reservation_id,
             customer, payment_method, coupon_ids, next_step_at)
         VALUES ($1, $2, 'pending', 'authorize', $3, $4, $5, $6, $7, $8, $9, now())
         RETURNING {ORDER_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.currency)
    .bind(new.total)
    .bind(new.quote_id)
    .bind(new.reservation_id)
    .bind(new.customer)
    .bind(new.payment_method)
    .bind(new.coupon_ids)
    .fetch_one(connection)
    .await
}

pub async fn find_order(connection: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM commerce.orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The order, locked for the rest of the transaction: every change to an order takes
/// this lock first, so the saga's steps and a cancel are applied one after the other.
pub async fn lock_order(connection: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM commerce.orders WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

pub async fn list_orders(
    connection: &mut PgConnection,
    business: BusinessId,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM commerce.orders
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) AND ($4::text IS NULL OR status = $4)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .bind(status)
    .fetch_all(connection)
    .await
}

/// What a saga step leaves of an order (every field written, from the locked row).
#[derive(Debug, Clone)]
pub struct OrderState {
    pub status: String,
    pub step: String,
    pub void_to: Option<String>,
    pub payment_intent_id: Option<String>,
    pub invoice_id: Option<Uuid>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub cancel_requested_at: Option<OffsetDateTime>,
    pub attempts: i32,
    /// When the next step is due, from now; `None` once the saga is done.
    pub next_step_in_ms: Option<i64>,
    /// Whether this change is announced (it moves `events_announced`).
    pub announced: bool,
    /// Whether the saga worker lets its lease go with this change (it stops working
    /// the order until the next step is due); a change by anyone else keeps the lease.
    pub release_lease: bool,
}

impl OrderState {
    pub fn of(row: &OrderRow) -> OrderState {
        OrderState {
            status: row.status.clone(),
            step: row.step.clone(),
            void_to: row.void_to.clone(),
            payment_intent_id: row.payment_intent_id.clone(),
            invoice_id: row.invoice_id,
            failure_code: row.failure_code.clone(),
            failure_message: row.failure_message.clone(),
            cancel_requested_at: row.cancel_requested_at,
            attempts: row.attempts,
            next_step_in_ms: Some(0),
            announced: false,
            release_lease: false,
        }
    }
}

/// Writes `state` over the order (locked by the caller).
pub async fn set_order(connection: &mut PgConnection, id: Uuid, state: &OrderState) -> Result<OrderRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE commerce.orders
            SET status = $2, step = $3, void_to = $4, payment_intent_id = $5, invoice_id = $6, failure_code = $7,
                failure_message = $8, cancel_requested_at = $9, attempts = $10,
                next_step_at = now() + make_interval(secs => $11::double precision / 1000),
                lease_until = CASE WHEN $13 THEN NULL ELSE lease_until END, events_announced = events_announced + CASE WHEN $12 THEN 1 ELSE 0 END,
                version = version + 1, updated_at = now()
          WHERE id = $1
          RETURNING {ORDER_COLUMNS}"
    ))
    .bind(id)
    .bind(&state.status)
    .bind(&state.step)
    .bind(&state.void_to)
    .bind(&state.payment_intent_id)
    .bind(state.invoice_id)
    .bind(&state.failure_code)
    .bind(&state.failure_message)
    .bind(state.cancel_requested_at)
    .bind(state.attempts)
    .bind(state.next_step_in_ms)
    .bind(state.announced)
    .bind(state.release_lease)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderStepRow {
    pub order_id: Uuid,
    pub position: i32,
    pub step: String,
    pub outcome: String,
    pub detail: String,
    pub at: OffsetDateTime,
}

/// Records a step of the order's saga (the order is locked by the caller, so positions
/// never collide).
pub async fn add_order_step(
    connection: &mut PgConnection,
    order: &OrderRow,
    step: &str,
    outcome: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let detail: String = detail.chars().take(1000).collect();
    sqlx::query(
        "INSERT INTO commerce.order_steps (order_id, business_id, position, step, outcome, detail)
         SELECT $1, $2, coalesce(max(position), 0) + 1, $3, $4, $5 FROM commerce.order_steps WHERE order_id = $1",
    )
    .bind(order.id)
    .bind(order.business_id)
    .bind(step)
    .bind(outcome)
    .bind(detail)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn order_steps(connection: &mut PgConnection, order: Uuid) -> Result<Vec<OrderStepRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, position, step, outcome, detail, at FROM commerce.order_steps
          WHERE order_id = $1 ORDER BY position",
    )
    .bind(order)
    .fetch_all(connection)
    .await
}

/// The steps of these orders, by order then position (a page of orders in one read).
pub async fn steps_of_orders(connection: &mut PgConnection, orders: &[Uuid]) -> Result<Vec<OrderStepRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, position, step, outcome, detail, at FROM commerce.order_steps
          WHERE order_id = ANY($1) ORDER BY order_id, position",
    )
    .bind(orders)
    .fetch_all(connection)
    .await
}

/// Redeems each coupon once, within its limit: the ids redeemed (fewer than asked if one
/// is used up or inactive). The condition is in the UPDATE, so the last redemption of a
/// limited coupon goes to exactly one of the orders racing for it.
pub async fn redeem_coupons(connection: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE commerce.coupons SET redemptions = redemptions + 1, updated_at = now()
          WHERE id = ANY($1) AND active AND (max_redemptions IS NULL OR redemptions < max_redemptions)
          RETURNING id",
    )
    .bind(ids)
    .fetch_all(connection)
    .await
}

/// Gives back the redemptions of an order that was not paid.
pub async fn unredeem_coupons(connection: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE commerce.coupons SET redemptions = redemptions - 1, updated_at = now()
          WHERE id = ANY($1) AND redemptions > 0",
    )
    .bind(ids)
    .execute(connection)
    .await?;
    Ok(())
}

/// Leases the orders of any business whose next step is due (the saga worker's listing).
pub async fn lease_due_orders(
    pool: &sqlx::PgPool,
    rows_max: i32,
    lease_seconds: i32,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT business_id, order_id FROM commerce.lease_due_orders($1, $2)")
        .bind(rows_max)
        .bind(lease_seconds)
        .fetch_all(pool)
        .await
}

/// Takes the next number of a series, in the caller's transaction (see the module).
pub async fn next_sequence(
    connection: &mut PgConnection,
    business: BusinessId,
    kind: &str,
    series: &str,
    period: i32,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO commerce.document_counters (business_id, kind, series, period, last_number)
         VALUES ($1, $2, $3, $4, 1)
         ON CONFLICT (business_id, kind, series, period)
         DO UPDATE SET last_number = commerce.document_counters.last_number + 1
         RETURNING last_number",
    )
    .bind(business.as_uuid())
    .bind(kind)
    .bind(series)
    .bind(period)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingsRow {
    pub business_id: uuid::Uuid,
    pub address: Vec<String>,
    pub invoice_series: String,
    pub credit_note_series: String,
    pub simplified_invoices: bool,
    pub version: i32,
    pub updated_at: OffsetDateTime,
}

const SETTINGS_COLUMNS: &str =
    "business_id, address, invoice_series, credit_note_series, simplified_invoices, version, updated_at";

pub async fn find_settings(
    connection: &mut PgConnection,
    business: BusinessId,
) -> Result<Option<SettingsRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {SETTINGS_COLUMNS} FROM commerce.invoice_settings WHERE business_id = $1"))
        .bind(business.as_uuid())
        .fetch_optional(connection)
        .await
}

pub async fn lock_settings(
    connection: &mut PgConnection,
    business: BusinessId,
) -> Result<Option<SettingsRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SETTINGS_COLUMNS} FROM commerce.invoice_settings WHERE business_id = $1 FOR UPDATE"
    ))
    .bind(business.as_uuid())
    .fetch_optional(connection)
    .await
}

pub struct NewSettings<'a> {
    pub business: BusinessId,
    pub address: &'a [String],
    pub invoice_series: &'a str,
    pub credit_note_series: &'a str,
    pub simplified_invoices: bool,
}

/// Sets the business's invoice settings, whether or not it had any.
pub async fn put_settings(connection: &mut PgConnection, new: &NewSettings<'_>) -> Result<SettingsRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO commerce.invoice_settings (business_id, address, invoice_series, credit_note_series, simplified_invoices)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (business_id) DO UPDATE
            SET address = $2, invoice_series = $3, credit_note_series = $4, simplified_invoices = $5,
                version = commerce.invoice_settings.version + 1, updated_at = now()
         RETURNING {SETTINGS_COLUMNS}"
    ))
    .bind(new.business.as_uuid())
    .bind(new.address)
    .bind(new.invoice_series)
    .bind(new.credit_note_series)
    .bind(new.simplified_invoices)
    .fetch_one(connection)
    .await
}

pub struct NewInvoice<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub order: Uuid,
    pub series: &'a str,
    pub period: i32,
    pub sequence: i64,
    pub number: &'a str,
    pub currency: &'a str,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    pub body: &'a serde_json::Value,
    pub issued_at: OffsetDateTime,
}

pub async fn insert_invoice(connection: &mut PgConnection, new: &NewInvoice<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO commerce.invoices (id, business_id, order_id, series, period, sequence, number, currency,
             net_total, tax_total, total, body, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.order)
    .bind(new.series)
    .bind(new.period)
    .bind(new.sequence)
    .bind(new.number)
    .bind(new.currency)
    .bind(new.net_total)
    .bind(new.tax_total)
    .bind(new.total)
    .bind(new.body)
    .bind(new.issued_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// An invoice's body, as issued.
pub async fn find_invoice(connection: &mut PgConnection, id: Uuid) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM commerce.invoices WHERE id = $1").bind(id).fetch_optional(connection).await
}

pub async fn list_invoices(
    connection: &mut PgConnection,
    business: BusinessId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT body FROM commerce.invoices
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3",
    )
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// Wakes the checkout saga's worker when the caller's transaction commits.
pub async fn notify(connection: &mut PgConnection, channel: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(channel).execute(connection).await?;
    Ok(())
}

/// Records that `amount` of the order was refunded; the order is `refunded` once all of
/// it is. Announced (the order's next event number).
pub async fn add_refunded(connection: &mut PgConnection, order: Uuid, amount: i64) -> Result<OrderRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE commerce.orders
            SET amount_refunded = amount_refunded + $2,
                status = CASE WHEN amount_refunded + $2 = total THEN 'refunded' ELSE status END,
                events_announced = events_announced + 1, version = version + 1, updated_at = now()
          WHERE id = $1
          RETURNING {ORDER_COLUMNS}"
    ))
    .bind(order)
    .bind(amount)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub lines: serde_json::Value,
    pub amount: i64,
    pub restock: bool,
    pub reason: String,
    pub refund_id: Option<String>,
    pub credit_note_id: Option<Uuid>,
    pub failure_message: Option<String>,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const REFUND_COLUMNS: &str =
    "id, business_id, order_id, status, lines, amount, restock, reason, refund_id, credit_note_id,
    failure_message, attempts, created_at, updated_at";

pub struct NewRefund<'a> {
    pub id: Uuid,
    pub business: Uuid,
    pub order: Uuid,
    pub lines: &'a serde_json::Value,
    pub amount: i64,
    pub restock: bool,
    pub reason: &'a str,
}

/// A refund of an order, pending, its first step due at once.
pub async fn insert_refund(connection: &mut PgConnection, new: &NewRefund<'_>) -> Result<RefundRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO commerce.order_refunds (id, business_id, order_id, status, lines, amount, restock, reason, next_step_at)
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, now())
         RETURNING {REFUND_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business)
    .bind(new.order)
    .bind(new.lines)
    .bind(new.amount)
    .bind(new.restock)
    .bind(new.reason)
    .fetch_one(connection)
    .await
}

pub async fn lock_refund(connection: &mut PgConnection, id: Uuid) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM commerce.order_refunds WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The order's refunds, oldest first.
pub async fn refunds_of_order(connection: &mut PgConnection, order: Uuid) -> Result<Vec<RefundRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM commerce.order_refunds WHERE order_id = $1 ORDER BY id"))
        .bind(order)
        .fetch_all(connection)
        .await
}

/// The refunds of these orders, by order, oldest first.
pub async fn refunds_of_orders(connection: &mut PgConnection, orders: &[Uuid]) -> Result<Vec<RefundRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {REFUND_COLUMNS} FROM commerce.order_refunds WHERE order_id = ANY($1) ORDER BY order_id, id"
    ))
    .bind(orders)
    .fetch_all(connection)
    .await
}

/// What a refund's step leaves of it.
pub struct RefundState<'a> {
    pub status: &'a str,
    pub refund_id: Option<&'a str>,
    pub credit_note_id: Option<Uuid>,
    pub failure_message: Option<&'a str>,
    pub attempts: i32,
    /// When its next step is due, from now; `None` once it has ended.
    pub next_step_in_ms: Option<i64>,
    pub release_lease: bool,
}

pub async fn set_refund(
    connection: &mut PgConnection,
    id: Uuid,
    state: &RefundState<'_>,
) -> Result<RefundRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE commerce.order_refunds
            SET status = $2, refund_id = $3, credit_note_id = $4, failure_message = $5, attempts = $6,
                next_step_at = now() + make_interval(secs => $7::double precision / 1000),
                lease_until = CASE WHEN $8 THEN NULL ELSE lease_until END, updated_at = now()
          WHERE id = $1
          RETURNING {REFUND_COLUMNS}"
    ))
    .bind(id)
    .bind(state.status)
    .bind(state.refund_id)
    .bind(state.credit_note_id)
    .bind(state.failure_message)
    .bind(state.attempts)
    .bind(state.next_step_in_ms)
    .bind(state.release_lease)
    .fetch_one(connection)
    .await
}

/// Leases the refunds of any business whose next step is due.
pub async fn lease_due_refunds(
    pool: &sqlx::PgPool,
    rows_max: i32,
    lease_seconds: i32,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT business_id, refund_id FROM commerce.lease_due_refunds($1, $2)")
        .bind(rows_max)
        .bind(lease_seconds)
        .fetch_all(pool)
        .await
}

pub struct NewCreditNote<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub order: Uuid,
    pub invoice: Uuid,
    pub refund: Uuid,
    pub series: &'a str,
    pub period: i32,
    pub sequence: i64,
    pub number: &'a str,
    pub currency: &'a str,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    pub body: &'a serde_json::Value,
    pub issued_at: OffsetDateTime,
}

pub async fn insert_credit_note(connection: &mut PgConnection, new: &NewCreditNote<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO commerce.credit_notes (id, business_id, order_id, invoice_id, refund_id, series, period, sequence,
             number, currency, net_total, tax_total, total, body, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.order)
    .bind(new.invoice)
    .bind(new.refund)
    .bind(new.series)
    .bind(new.period)
    .bind(new.sequence)
    .bind(new.number)
    .bind(new.currency)
    .bind(new.net_total)
    .bind(new.tax_total)
    .bind(new.total)
    .bind(new.body)
    .bind(new.issued_at)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn find_credit_note(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM commerce.credit_notes WHERE id = $1").bind(id).fetch_optional(connection).await
}

pub async fn list_credit_notes(
    connection: &mut PgConnection,
    business: BusinessId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT body FROM commerce.credit_notes
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3",
    )
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// The bodies of invoices issued in `[from, to)`, oldest first, at most `rows_max`.
pub async fn invoices_issued_between(
    connection: &mut PgConnection,
    business: BusinessId,
    from: OffsetDateTime,
    to: OffsetDateTime,
    rows_max: i64,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT body FROM commerce.invoices
          WHERE business_id = $1 AND issued_at >= $2 AND issued_at < $3 ORDER BY issued_at, id LIMIT $4",
    )
    .bind(business.as_uuid())
    .bind(from)
    .bind(to)
    .bind(rows_max)
    .fetch_all(connection)
    .await
}

/// The bodies of credit notes issued in `[from, to)`, oldest first, at most `rows_max`.
pub async fn credit_notes_issued_between(
    connection: &mut PgConnection,
    business: BusinessId,
    from: OffsetDateTime,
    to: OffsetDateTime,
    rows_max: i64,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT body FROM commerce.credit_notes
          WHERE business_id = $1 AND issued_at >= $2 AND issued_at < $3 ORDER BY issued_at, id LIMIT $4",
    )
    .bind(business.as_uuid())
    .bind(from)
    .bind(to)
    .bind(rows_max)
    .fetch_all(connection)
    .await
}
