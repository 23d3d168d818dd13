//! The audit log as other services write to it: in their own transaction, so that a
//! decision and its record commit together (the payouts policy's decisions, who approved
//! a payout). Append-only: the table refuses updates and deletes.

use sqlx::PgConnection;
use till_kit::BusinessId;

/// Records `action` by `actor` (`Principal::actor`) with its `details`.
pub async fn record(
    connection: &mut PgConnection,
    business: BusinessId,
    action: &str,
    actor: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    crate::store::record_audit(connection, business, action, actor, details).await
}
