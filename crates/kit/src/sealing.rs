//! Secrets at rest: values sealed with an AEAD (ChaCha20-Poly1305, `ring`) under a server
//! key before they are written, and opened when read.
//!
//! A [`Keyring`] holds one or more 256-bit keys, each with a short id. The first seals;
//! every key opens, so a key can be rotated in without a flag day: put the new key first,
//! keep the old one after it until nothing sealed with it is left (docs/DECISIONS.md,
//! "Secrets at rest"). A sealed value names its key:
//!
//! ```text
//! 0x00 "s1" | key id length (1 byte) | key id | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The leading NUL cannot begin a JSON document or a `whsec_`/`till_sk_` secret, so a
//! sealed value is never mistaken for a plain one. Every seal takes a `context` (the
//! table and the row's identity) as associated data: a sealed value copied to another
//! row does not open there.
//!
//! Nonces are random. With 96-bit random nonces a key should seal well under 2^32
//! values; Till seals only what carries a secret (a few values per key created, webhook
//! endpoint or business onboarded), far below that, and rotation resets the count.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 3] = b"\0s1";
pub const KEY_BYTES: usize = 32;
pub const KEY_ID_CHARS_MAX: usize = 32;

/// The server's sealing keys: the first seals, all open.
pub struct Keyring {
    keys: Vec<(String, LessSafeKey)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        formatter.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no keys: give at least one `id:key` (the key 32 random bytes in base64url)")]
    Empty,
    #[error("`{0}` is not `id:key`")]
    Shape(String),
    #[error("key id `{0}` must be 1 to 32 letters, digits, `-` or `_`")]
    KeyId(String),
    #[error("key `{0}` is not 32 bytes of base64url (unpadded)")]
    KeyBytes(String),
    #[error("key id `{0}` appears twice")]
    DuplicateId(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value is not sealed")]
    NotSealed,
    #[error("the value was sealed with key `{0}`, which is not in the keyring")]
    UnknownKey(String),
    #[error("the sealed value is damaged, or belongs to another row")]
    Damaged,
}

/// Whether `bytes` is a sealed value (by its header; opening says whether it is genuine).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl Keyring {
    /// Parses `id:key[,id:key…]`, keys as unpadded base64url of 32 bytes; the first seals.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (id, encoded) = item.split_once(':').ok_or_else(|| KeyringError::Shape(mask(item)))?;
            let valid_id = !id.is_empty()
                && id.len() <= KEY_ID_CHARS_MAX
                && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
            if !valid_id {
                return Err(KeyringError::KeyId(id.chars().take(KEY_ID_CHARS_MAX).collect()));
            }
            if keys.iter().any(|(known, _)| known == id) {
                return Err(KeyringError::DuplicateId(id.to_string()));
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(encoded)
                .ok()
                .filter(|bytes| bytes.len() == KEY_BYTES)
                .ok_or_else(|| KeyringError::KeyBytes(id.to_string()))?;
            keys.push((id.to_string(), key(&bytes)));
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// A new random key with id `id`, as `id:key` text for [`Keyring::parse`] (to keep in
    /// a 0600 file or a secret store). `None` only if the system has no randomness.
    pub fn generate_text(id: &str) -> Option<String> {
        let mut bytes = [0_u8; KEY_BYTES];
        SystemRandom::new().fill(&mut bytes).ok()?;
        Some(format!("{id}:{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The id of the key that seals.
    pub fn sealing_key_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// The id of the key `sealed` was sealed with, if it is a sealed value.
    pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let (&length, rest) = rest.split_first()?;
        std::str::from_utf8(rest.get(..usize::from(length))?).ok()
    }

    /// Seals `plaintext` for the row named by `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let Some((id, key)) = self.keys.first() else {
            panic!("a keyring without keys: `Keyring::parse` refuses one");
        };
        let mut nonce = [0_u8; NONCE_LEN];
        // Without the OS's randomness nothing secret can be made; no request can go on.
        if SystemRandom::new().fill(&mut nonce).is_err() {
            panic!("the operating system gave no randomness for a nonce");
        }
        let mut body = plaintext.to_vec();
        if key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut body).is_err() {
            // Only a plaintext beyond ChaCha20's 256 GiB limit fails.
            panic!("sealing a value failed");
        }
        let mut sealed = Vec::with_capacity(MAGIC.len() + 1 + id.len() + NONCE_LEN + body.len());
        sealed.extend_from_slice(MAGIC);
        // Key ids are 1 to 32 bytes (checked by `parse`).
        sealed.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        sealed.extend_from_slice(id.as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        sealed
    }

    /// Opens a value sealed for the row named by `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let id = Keyring::key_id_of(sealed).ok_or(OpenError::NotSealed)?;
        let (_, key) =
            self.keys.iter().find(|(known, _)| known == id).ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let start = MAGIC.len() + 1 + id.len();
        let nonce: [u8; NONCE_LEN] =
            sealed.get(start..start + NONCE_LEN).and_then(|bytes| bytes.try_into().ok()).ok_or(OpenError::Damaged)?;
        let mut body = sealed.get(start + NONCE_LEN..).ok_or(OpenError::Damaged)?.to_vec();
        let opened = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut body)
            .map_err(|_| OpenError::Damaged)?;
        Ok(opened.to_vec())
    }
}

fn key(bytes: &[u8]) -> LessSafeKey {
    // 32 bytes is ChaCha20-Poly1305's key length, checked by the caller.
    match UnboundKey::new(&CHACHA20_POLY1305, bytes) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => panic!("a 32-byte key was refused by ChaCha20-Poly1305"),
    }
}

/// The first characters only, for error messages about a configured value.
fn mask(text: &str) -> String {
    let head: String = text.chars().take(4).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text).expect("keyring")
    }

    #[test]
    fn a_sealed_value_opens_for_its_row_only() {
        let keys = ring(&Keyring::generate_text("k1").expect("random"));
        let sealed = keys.seal(b"row 1", b"till_sk_secret");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(7).any(|window| window == b"till_sk"), "the plaintext is not in the sealed bytes");
        assert_eq!(keys.open(b"row 1", &sealed), Ok(b"till_sk_secret".to_vec()));
        assert_eq!(keys.open(b"row 2", &sealed), Err(OpenError::Damaged), "another row's context");
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(keys.open(b"row 1", &tampered), Err(OpenError::Damaged));
        assert_eq!(keys.open(b"row 1", b"{\"plain\": true}"), Err(OpenError::NotSealed));
        assert_ne!(keys.seal(b"row 1", b"same"), keys.seal(b"row 1", b"same"), "nonces differ");
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = Keyring::generate_text("old").expect("random");
        let new = Keyring::generate_text("new").expect("random");
        let before = ring(&old).seal(b"c", b"v");
        let rotated = ring(&format!("{new},{old}"));
        assert_eq!(rotated.sealing_key_id(), "new");
        assert_eq!(rotated.open(b"c", &before), Ok(b"v".to_vec()));
        assert_eq!(Keyring::key_id_of(&rotated.seal(b"c", b"v")), Some("new"));
        assert_eq!(ring(&new).open(b"c", &before), Err(OpenError::UnknownKey("old".into())));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let good = Keyring::generate_text("a").expect("random");
        assert_eq!(Keyring::parse("").map(|_| ()), Err(KeyringError::Empty));
        assert!(matches!(Keyring::parse("nocolon"), Err(KeyringError::Shape(_))));
        assert!(matches!(Keyring::parse("bad id:AAAA"), Err(KeyringError::KeyId(_))));
        assert!(matches!(Keyring::parse("a:AAAA"), Err(KeyringError::KeyBytes(_))));
        assert!(matches!(Keyring::parse(&format!("{good},{good}")), Err(KeyringError::DuplicateId(_))));
        assert!(!format!("{:?}", ring(&good)).contains(good.split_once(':').map_or("", |(_, key)| key)));
    }
}
