//! Strict verification of dashboard users' JWTs.
//!
//! Each configured key is bound to exactly one algorithm, and a token is checked with the
//! algorithm of the key its `kid` names, never with the one its header asks for. That
//! closes the classic holes: `alg: none` is not an algorithm we accept, an HS256 token
//! cannot be verified with an RSA public key used as an HMAC secret, and an unknown `kid`
//! is refused rather than tried against every key. `exp`, `iat`, `iss`, `aud` and `sub`
//! are required, `nbf` is honoured, clock leeway is capped at 60 seconds, a token may not
//! be issued in the future nor live longer than the configured maximum (`exp - iat`), and
//! a token (`jti`) or every token of a subject issued before a moment can be revoked
//! (`access.token_revocations`; checked by authentication, not here).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use till_http::auth::{Credential, Principal, Role};
use till_kit::BusinessId;

pub const LEEWAY_SECONDS_MAX: u64 = 60;
/// The longest a dashboard token may live (`exp - iat`), unless configured otherwise.
pub const LIFETIME_SECONDS_DEFAULT: u64 = 60 * 60;
/// The longest the lifetime may be configured: a day.
pub const LIFETIME_SECONDS_MAX: u64 = 24 * 60 * 60;
pub const TOKEN_ID_CHARS_MAX: usize = 255;
pub const HMAC_SECRET_BYTES_MIN: usize = 32;
pub const SUBJECT_CHARS_MAX: usize = 255;

/// One trusted key as configured (`TILL_JWT_KEYS`, a JSON array of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    pub kid: String,
    /// `EdDSA`, `ES256`, `RS256`, or `HS256`.
    pub alg: String,
    /// PEM public key, for EdDSA, ES256 and RS256.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Shared secret for HS256, at least 32 bytes.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtConfigError {
    #[error("JWT key `{kid}`: algorithm `{alg}` is not allowed (use EdDSA, ES256, RS256 or HS256)")]
    Algorithm { kid: String, alg: String },
    #[error("JWT key `{kid}`: {why}")]
    Key { kid: String, why: String },
    #[error("JWT keys need an issuer and an audience (TILL_JWT_ISSUER, TILL_JWT_AUDIENCE)")]
    MissingIssuerOrAudience,
    #[error("JWT leeway is at most {LEEWAY_SECONDS_MAX} seconds")]
    Leeway,
    #[error("JWT key ids must be unique; `{0}` repeats")]
    DuplicateKid(String),
    #[error("the JWT lifetime must be 60 to {LIFETIME_SECONDS_MAX} seconds")]
    Lifetime,
}

struct TrustedKey {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The verifier built from configuration at start-up. With no keys, every JWT is refused.
pub struct JwtVerifier {
    keys: Vec<TrustedKey>,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
    lifetime_seconds_max: u64,
}

/// A verified token: who it speaks for, and what its revocation is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub principal: Principal,
    /// `iat`, seconds since the epoch.
    pub issued_at: i64,
    /// `jti`, when the token has one.
    pub token_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    #[error("the token is malformed or uses an algorithm that is not allowed")]
    Malformed,
    #[error("the token's key id is not a trusted key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer or audience is wrong")]
    WrongIssuerOrAudience,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token lacks a required claim or has an invalid one")]
    BadClaims,
    #[error("the token claims to be issued in the future")]
    IssuedInTheFuture,
    #[error("the token lives longer than tokens may (exp - iat)")]
    TooLongLived,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    business_id: String,
    role: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
}

impl JwtVerifier {
    pub fn disabled() -> JwtVerifier {
        JwtVerifier {
            keys: Vec::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_seconds: 0,
            lifetime_seconds_max: LIFETIME_SECONDS_DEFAULT,
        }
    }

    pub fn new(
        configs: &[JwtKeyConfig],
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway_seconds: u64,
        lifetime_seconds_max: u64,
    ) -> Result<JwtVerifier, JwtConfigError> {
        if !(60..=LIFETIME_SECONDS_MAX).contains(&lifetime_seconds_max) {
            return Err(JwtConfigError::Lifetime);
        }
        if configs.is_empty() {
            return Ok(JwtVerifier::disabled());
        }
        let (Some(issuer), Some(audience)) = (issuer, audience) else {
            return Err(JwtConfigError::MissingIssuerOrAudience);
        };
        if leeway_seconds > LEEWAY_SECONDS_MAX {
            return Err(JwtConfigError::Leeway);
        }
        let mut keys = Vec::with_capacity(configs.len());
        for config in configs {
            if keys.iter().any(|key: &TrustedKey| key.kid == config.kid) {
                return Err(JwtConfigError::DuplicateKid(config.kid.clone()));
            }
            keys.push(trusted_key(config)?);
        }
        Ok(JwtVerifier {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway_seconds,
            lifetime_seconds_max,
        })
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The longest a token may live (`exp - iat`), in seconds.
    pub fn lifetime_seconds_max(&self) -> u64 {
        self.lifetime_seconds_max
    }

    /// Verifies `token` at `now` (seconds since the epoch) and returns the principal it
    /// speaks for, with what its revocation is checked against.
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, JwtRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        let key = match (&header.kid, self.keys.as_slice()) {
            (Some(kid), keys) => keys.iter().find(|key| &key.kid == kid).ok_or(JwtRejection::UnknownKey)?,
            // Without a kid, only an unambiguous single key may be used.
            (None, [only]) => only,
            (None, _) => return Err(JwtRejection::UnknownKey),
        };
        if header.alg != key.algorithm {
            return Err(JwtRejection::AlgorithmMismatch);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.algorithms = vec![key.algorithm];
        validation.leeway = self.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature => JwtRejection::Expired,
                ErrorKind::ImmatureSignature => JwtRejection::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => JwtRejection::WrongIssuerOrAudience,
                ErrorKind::InvalidSignature => JwtRejection::BadSignature,
                ErrorKind::InvalidAlgorithm => JwtRejection::AlgorithmMismatch,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => JwtRejection::BadClaims,
                _ => JwtRejection::Malformed,
            }
        })?;
        let claims = data.claims;
        let business_id = BusinessId::parse(&claims.business_id).map_err(|_| JwtRejection::BadClaims)?;
        let role = Role::parse(&claims.role).ok_or(JwtRejection::BadClaims)?;
        // The subject names the principal (idempotency keys, rate limits, the audit log):
        // 1 to 255 characters of human text.
        if claims.sub.is_empty() || till_kit::text::check(&claims.sub, SUBJECT_CHARS_MAX).is_err() {
            return Err(JwtRejection::BadClaims);
        }
        let token_id_valid = |id: &String| !id.is_empty() && till_kit::text::check(id, TOKEN_ID_CHARS_MAX).is_ok();
        if claims.jti.as_ref().is_some_and(|id| !token_id_valid(id)) {
            return Err(JwtRejection::BadClaims);
        }
        let leeway = i64::try_from(self.leeway_seconds).unwrap_or(0);
        if claims.iat > now.saturating_add(leeway) {
            return Err(JwtRejection::IssuedInTheFuture);
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime > i64::try_from(self.lifetime_seconds_max).unwrap_or(i64::MAX) {
            return Err(JwtRejection::TooLongLived);
        }
        Ok(VerifiedToken {
            principal: Principal { business_id, role, credential: Credential::User { subject: claims.sub } },
            issued_at: claims.iat,
            token_id: claims.jti,
        })
    }
}

fn trusted_key(config: &JwtKeyConfig) -> Result<TrustedKey, JwtConfigError> {
    let key_error = |why: &str| JwtConfigError::Key { kid: config.kid.clone(), why: why.to_string() };
    let pem =
        || config.public_key_pem.as_deref().map(str::as_bytes).ok_or_else(|| key_error("public_key_pem is required"));
    let (algorithm, key) = match config.alg.as_str() {
        "EdDSA" => (
            Algorithm::EdDSA,
            DecodingKey::from_ed_pem(pem()?).map_err(|_| key_error("not an Ed25519 public key PEM"))?,
        ),
        "ES256" => {
            (Algorithm::ES256, DecodingKey::from_ec_pem(pem()?).map_err(|_| key_error("not an EC public key PEM"))?)
        }
        "RS256" => {
            (Algorithm::RS256, DecodingKey::from_rsa_pem(pem()?).map_err(|_| key_error("not an RSA public key PEM"))?)
        }
        "HS256" => {
            let secret = config.secret.as_deref().ok_or_else(|| key_error("secret is required for HS256"))?;
            if secret.len() < HMAC_SECRET_BYTES_MIN {
                return Err(key_error("HS256 secrets must be at least 32 bytes"));
            }
            if config.public_key_pem.is_some() {
                return Err(key_error("an HS256 key takes a secret, not a public key"));
            }
            (Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()))
        }
        other => return Err(JwtConfigError::Algorithm { kid: config.kid.clone(), alg: other.to_string() }),
    };
    if algorithm != Algorithm::HS256 && config.secret.is_some() {
        return Err(key_error("an asymmetric key takes public_key_pem, not a secret"));
    }
    Ok(TrustedKey { kid: config.kid.clone(), algorithm, key })
}
