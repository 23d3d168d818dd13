//! Webhook signing secrets at rest: sealed with the server's keyring
//! (`till_kit::sealing`), bound to their endpoint's id, and opened only to sign.
//!
//! Rows written before sealing (or by an older instance during a rolling upgrade) hold
//! the plain secret; [`reseal`] seals them, and re-seals those sealed with a key that is
//! no longer the keyring's first, so that a retired key can leave the keyring.

use sqlx::PgPool;
use till_kit::{Keyring, Secret};
use uuid::Uuid;

/// What a secret is sealed with: the endpoint it signs for.
pub fn context(endpoint: Uuid) -> String {
    format!("webhooks.endpoints\u{1f}{endpoint}")
}

pub fn seal(keyring: &Keyring, endpoint: Uuid, secret: &str) -> Vec<u8> {
    keyring.seal(context(endpoint).as_bytes(), secret.as_bytes())
}

/// The secret of a claimed or stored endpoint row: the sealed copy if there is one,
/// else the plain one (a row not yet resealed). Masked in `Debug`, never serialized.
pub fn open(
    keyring: &Keyring,
    endpoint: Uuid,
    sealed: Option<&[u8]>,
    plain: Option<&str>,
) -> Result<Option<Secret<String>>, till_kit::sealing::OpenError> {
    match (sealed, plain) {
        (Some(sealed), _) => {
            let bytes = keyring.open(context(endpoint).as_bytes(), sealed)?;
            Ok(Some(Secret::new(String::from_utf8_lossy(&bytes).into_owned())))
        }
        (None, plain) => Ok(plain.map(|plain| Secret::new(plain.to_string()))),
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    secret: Option<String>,
    secret_sealed: Option<Vec<u8>>,
    previous_secret: Option<String>,
    previous_secret_sealed: Option<Vec<u8>>,
}

const RESEAL_ROWS_MAX: i64 = 500;

/// Seals every plain secret and re-seals every secret sealed with another key than the
/// keyring's first, in pages, with the owner's pool (it works across businesses).
/// Each row is written only if it is still as it was read, so two instances starting at
/// once, or a rotation meanwhile, never lose a secret. Returns how many rows changed.
pub async fn reseal(owner_pool: &PgPool, keyring: &Keyring) -> anyhow::Result<u64> {
    let current = keyring.sealing_key_id().as_bytes().to_vec();
    let mut after = Uuid::nil();
    let mut changed = 0;
    loop {
        // The key id of a sealed value is its bytes 5.. (after "\0s1" and the id's length).
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, secret, secret_sealed, previous_secret, previous_secret_sealed
               FROM webhooks.endpoints
              WHERE id > $1
                AND (secret IS NOT NULL OR previous_secret IS NOT NULL
                     OR substring(secret_sealed FROM 5 FOR get_byte(secret_sealed, 3)) <> $2
                     OR substring(previous_secret_sealed FROM 5 FOR get_byte(previous_secret_sealed, 3)) <> $2)
              ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(&current)
        .bind(RESEAL_ROWS_MAX)
        .fetch_all(owner_pool)
        .await?;
        let Some(last) = rows.last() else { return Ok(changed) };
        after = last.id;
        for row in rows {
            let opened = open(keyring, row.id, row.secret_sealed.as_deref(), row.secret.as_deref()).map(|secret| {
                let previous =
                    open(keyring, row.id, row.previous_secret_sealed.as_deref(), row.previous_secret.as_deref());
                // A previous secret that no longer opens only ends its grace period early.
                (secret, previous.unwrap_or(None))
            });
            let (secret, previous) = match opened {
                Ok((Some(secret), previous)) => (secret, previous),
                Ok((None, _)) => continue,
                Err(error) => {
                    // Its deliveries fail until the key is back in the keyring or the
                    // secret is rotated; the other endpoints are not held up by it.
                    tracing::error!(%error, endpoint = %row.id, "a webhook signing secret cannot be opened");
                    continue;
                }
            };
            let updated = sqlx::query(
                "UPDATE webhooks.endpoints
                    SET secret_sealed = $2, previous_secret_sealed = $3, secret = NULL, previous_secret = NULL
                  WHERE id = $1 AND secret IS NOT DISTINCT FROM $4 AND secret_sealed IS NOT DISTINCT FROM $5
                    AND previous_secret IS NOT DISTINCT FROM $6 AND previous_secret_sealed IS NOT DISTINCT FROM $7",
            )
            .bind(row.id)
            .bind(seal(keyring, row.id, secret.expose_secret()))
            .bind(previous.as_ref().map(|previous| seal(keyring, row.id, previous.expose_secret())))
            .bind(&row.secret)
            .bind(&row.secret_sealed)
            .bind(&row.previous_secret)
            .bind(&row.previous_secret_sealed)
            .execute(owner_pool)
            .await?;
            changed += updated.rows_affected();
        }
    }
}
