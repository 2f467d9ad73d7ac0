//! Encryption at rest of webhook signing keys: XChaCha20-Poly1305 under the keys of
//! `security.secret_keys`. The first key seals; every key opens, so a new key is added in
//! front, the old one kept until everything is sealed again under the new one (the worker does
//! that at start), then dropped.
//!
//! A sealed value is text: `v1:<key id>:<base64 of nonce and ciphertext>`. Each is bound to
//! its webhook (the webhook id is the associated data), so a sealed key copied onto another
//! row does not open there.

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::{Rng, RngCore};
use zeroize::Zeroizing;

const VERSION: &str = "v1";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const MAX_ID_LEN: usize = 32;
/// The id of the key shipped in `config/default.toml` for development: anyone with the source
/// holds it.
pub const DEVELOPMENT_KEY_ID: &str = "development";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("no key configured; generate one with `tesoro-webhooks keygen`")]
    Empty,
    #[error(
        "entry {0} must be `id:base64key`: an id of 1 to {MAX_ID_LEN} letters, digits, '-' or \
         '_', and a key of {KEY_BYTES} bytes (generate one with `tesoro-webhooks keygen`)"
    )]
    Malformed(usize),
    #[error("key id {0:?} appears twice")]
    DuplicateId(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed with key {0:?}, which security.secret_keys does not hold")]
    UnknownKey(String),
    #[error("not a sealed value")]
    Malformed,
    #[error("does not open: the wrong key, another row's value, or altered")]
    Refused,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The keys of `security.secret_keys`, the first one sealing. Its `Debug` shows key ids only.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// Parses `id:base64key` entries. Errors name the entry by position, never its content.
    pub fn parse(entries: &[String]) -> Result<Self, KeyRingError> {
        if entries.is_empty() {
            return Err(KeyRingError::Empty);
        }
        let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let malformed = || KeyRingError::Malformed(index + 1);
            let (id, encoded) = entry.trim().split_once(':').ok_or_else(malformed)?;
            let id_ok = !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let bytes = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| malformed())?);
            if !id_ok || bytes.len() != KEY_BYTES {
                return Err(malformed());
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyRingError::DuplicateId(id.to_owned()));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| malformed())?;
            keys.push(Key {
                id: id.to_owned(),
                cipher,
            });
        }
        Ok(Self { keys })
    }

    /// A fresh `id:base64key` entry, as `tesoro-webhooks keygen` prints it: the id names the
    /// day it was made and a random suffix, so keys sort by age.
    pub fn generate_entry(today: time::Date) -> String {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rng().fill_bytes(key.as_mut());
        let suffix: u16 = rand::rng().random();
        format!(
            "k{:04}{:02}{:02}-{suffix:04x}:{}",
            today.year(),
            u8::from(today.month()),
            today.day(),
            STANDARD.encode(key.as_ref())
        )
    }

    /// The id of the key that seals.
    pub fn sealing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Whether the sealing key is the development key shipped with the defaults.
    pub fn seals_with_development_key(&self) -> bool {
        self.keys[0].id == DEVELOPMENT_KEY_ID
    }

    /// Encrypts `plaintext` with the first key, bound to `context` (the owning row's id).
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 encrypts any input in memory"));
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{VERSION}:{}:{}", key.id, STANDARD.encode(sealed))
    }

    /// Decrypts a value `seal` made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Zeroizing<String>, SealError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plaintext = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Refused)?;
        String::from_utf8(plaintext)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Refused)
    }

    /// Whether `sealed` is sealed with the first key (else it is sealed again at start).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .strip_prefix(VERSION)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.keys[0].id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; KEY_BYTES]))
    }

    fn ring(entries: &[String]) -> KeyRing {
        KeyRing::parse(entries).expect("valid key ring")
    }

    #[test]
    fn sealed_values_open_with_their_context_only() {
        let keys = ring(&[entry("a", 1)]);
        let sealed = keys.seal("whsec_secret", "webhook-1");
        assert!(!sealed.contains("whsec_secret"));
        assert!(sealed.starts_with("v1:a:"));
        assert_eq!(
            keys.open(&sealed, "webhook-1").expect("opens").as_str(),
            "whsec_secret"
        );
        assert_eq!(keys.open(&sealed, "webhook-2"), Err(SealError::Refused));
        assert_ne!(
            sealed,
            keys.seal("whsec_secret", "webhook-1"),
            "fresh nonce"
        );
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = ring(&[entry("old", 1)]);
        let sealed_old = old.seal("x", "w");
        let rotated = ring(&[entry("new", 2), entry("old", 1)]);
        assert_eq!(rotated.open(&sealed_old, "w").expect("opens").as_str(), "x");
        assert!(!rotated.is_current(&sealed_old));
        let sealed_new = rotated.seal("x", "w");
        assert!(rotated.is_current(&sealed_new));
        assert_eq!(
            old.open(&sealed_new, "w"),
            Err(SealError::UnknownKey("new".into()))
        );
        let same_id_other_bytes = ring(&[entry("old", 9)]);
        assert_eq!(
            same_id_other_bytes.open(&sealed_old, "w"),
            Err(SealError::Refused)
        );
    }

    #[test]
    fn altered_or_foreign_values_do_not_open() {
        let keys = ring(&[entry("a", 1)]);
        let sealed = keys.seal("x", "w");
        // One byte of the sealed value flipped, and encoded again: a base64 character changed
        // in place can make a non-canonical encoding, which fails to decode instead.
        let (head, encoded) = sealed.rsplit_once(':').expect("v1:id:value");
        let mut bytes = STANDARD.decode(encoded).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let altered = format!("{head}:{}", STANDARD.encode(bytes));
        assert_eq!(keys.open(&altered, "w"), Err(SealError::Refused));
        for foreign in ["whsec_plain", "v1:a", "v1:a:***", "v2:a:AAAA", "v1:a:AAAA"] {
            assert!(keys.open(foreign, "w").is_err(), "{foreign}");
        }
    }

    #[test]
    fn bad_key_lists_are_refused_without_echoing_them() {
        let short = format!("a:{}", STANDARD.encode([1u8; 16]));
        let cases: [(&[String], KeyRingError); 5] = [
            (&[], KeyRingError::Empty),
            (&["nocolon".into()], KeyRingError::Malformed(1)),
            (&[entry("a", 1), short.clone()], KeyRingError::Malformed(2)),
            (&[entry("bad id", 1)], KeyRingError::Malformed(1)),
            (
                &[entry("a", 1), entry("a", 2)],
                KeyRingError::DuplicateId("a".into()),
            ),
        ];
        for (entries, expected) in cases {
            let error = KeyRing::parse(entries).expect_err("refused");
            assert_eq!(error, expected);
            assert!(!error.to_string().contains(&short[2..]));
        }
    }

    #[test]
    fn generated_entries_parse_and_differ() {
        let today = time::macros::date!(2026 - 12 - 06);
        let a = KeyRing::generate_entry(today);
        let b = KeyRing::generate_entry(today);
        assert_ne!(a, b);
        assert!(a.starts_with("k20261206-"), "{a}");
        let keys = ring(&[a, b]);
        assert!(!keys.seals_with_development_key());
        assert!(!format!("{keys:?}").contains("AAAA"));
    }
}
