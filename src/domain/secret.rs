//! A webhook's signing keys in the Standard Webhooks formats: a shared secret (`whsec_` +
//! base64 of the HMAC key) or an Ed25519 key pair (`whsk_` + base64 of the 32-byte seed; the
//! public key `whpk_` + base64 of its 32 bytes), and the previous key that still signs for a
//! while after a rotation.

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use time::OffsetDateTime;
use zeroize::Zeroizing;

pub const SECRET_PREFIX: &str = "whsec_";
pub const PRIVATE_KEY_PREFIX: &str = "whsk_";
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
const ED25519_SEED_BYTES: usize = 32;
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
const GENERATED_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("must start with \"whsec_\" followed by base64")]
    Format,
    #[error("key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes once base64-decoded")]
    Length,
    #[error("must be \"whsk_\" followed by the base64 of a 32-byte Ed25519 seed")]
    Ed25519,
}

/// The HMAC key of a webhook. Neither `Debug` nor `Display` reveals it, so it cannot slip into
/// logs or error messages; [`SigningSecret::expose`] is the one way to read it back.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    encoded: String,
    key: Vec<u8>,
}

impl SigningSecret {
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        let b64 = value
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Format)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Format)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(Self {
            encoded: value.to_owned(),
            key,
        })
    }

    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self {
            encoded: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The `whsec_…` text, for storage and for showing once to its owner.
    pub fn expose(&self) -> &str {
        &self.encoded
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// An Ed25519 signing key (the Standard Webhooks asymmetric scheme, `v1a`). Neither `Debug`
/// nor `Display` reveals it; receivers verify with [`Ed25519Key::public_key`].
#[derive(Clone)]
pub struct Ed25519Key {
    encoded: Zeroizing<String>,
    key: ed25519_dalek::SigningKey,
}

impl PartialEq for Ed25519Key {
    fn eq(&self, other: &Self) -> bool {
        self.key.to_bytes() == other.key.to_bytes()
    }
}

impl Eq for Ed25519Key {}

impl Ed25519Key {
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        let seed = value
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .map(Zeroizing::new)
            .ok_or(SecretError::Ed25519)?;
        let seed: &[u8; ED25519_SEED_BYTES] = seed
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::Ed25519)?;
        Ok(Self {
            encoded: Zeroizing::new(value.to_owned()),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }

    /// A fresh random key pair.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; ED25519_SEED_BYTES]);
        rand::rng().fill_bytes(seed.as_mut());
        Self {
            encoded: Zeroizing::new(format!(
                "{PRIVATE_KEY_PREFIX}{}",
                STANDARD.encode(seed.as_ref())
            )),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The `whsk_…` text, for sealed storage only: it is never shown.
    pub fn expose(&self) -> &str {
        &self.encoded
    }

    /// The `whpk_…` public key receivers verify with.
    pub fn public_key(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(self.key.verifying_key().as_bytes())
        )
    }

    pub(crate) fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Key(<redacted>)")
    }
}

/// How a webhook's requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// HMAC-SHA256 with a shared `whsec_` secret (`v1`).
    Hmac,
    /// Ed25519 (`v1a`): receivers need only the public key.
    Ed25519,
}

impl SignatureScheme {
    pub const ALL: [Self; 2] = [Self::Hmac, Self::Ed25519];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::Hmac => "hmac",
            SignatureScheme::Ed25519 => "ed25519",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scheme| scheme.as_str() == value)
    }
}

/// One signing key of either scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    Hmac(SigningSecret),
    Ed25519(Ed25519Key),
}

impl SigningKey {
    /// A `whsec_` secret or a `whsk_` private key.
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        if value.starts_with(PRIVATE_KEY_PREFIX) {
            Ed25519Key::parse(value).map(SigningKey::Ed25519)
        } else {
            SigningSecret::parse(value).map(SigningKey::Hmac)
        }
    }

    /// A fresh key of `scheme`.
    pub fn generate(scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::Hmac => SigningKey::Hmac(SigningSecret::generate()),
            SignatureScheme::Ed25519 => SigningKey::Ed25519(Ed25519Key::generate()),
        }
    }

    pub fn scheme(&self) -> SignatureScheme {
        match self {
            SigningKey::Hmac(_) => SignatureScheme::Hmac,
            SigningKey::Ed25519(_) => SignatureScheme::Ed25519,
        }
    }

    /// Its text form, for sealed storage.
    pub fn expose(&self) -> &str {
        match self {
            SigningKey::Hmac(secret) => secret.expose(),
            SigningKey::Ed25519(key) => key.expose(),
        }
    }

    /// What the owner is shown once when the key is set: the `whsec_` secret, or the `whpk_`
    /// public key (the private key is never shown).
    pub fn shown_to_owner(&self) -> String {
        match self {
            SigningKey::Hmac(secret) => secret.expose().to_owned(),
            SigningKey::Ed25519(key) => key.public_key(),
        }
    }
}

/// A webhook's signing keys: the current one, and the one a rotation replaced, which signs
/// beside it until the rotation's grace ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub key: SigningKey,
    pub previous: Option<PreviousKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    pub key: SigningKey,
    /// When the rotation's grace ends: the previous key signs requests stamped before it.
    pub until: OffsetDateTime,
}

impl Signing {
    /// The keys that sign a request stamped `timestamp` (Unix seconds), current first.
    pub fn keys_at(&self, timestamp: i64) -> impl Iterator<Item = &SigningKey> {
        let previous = self
            .previous
            .as_ref()
            .filter(|p| timestamp < p.until.unix_timestamp())
            .map(|p| &p.key);
        std::iter::once(&self.key).chain(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_standard_format() {
        let s = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(s.key().len(), 24);
    }

    #[test]
    fn rejects_malformed_secrets() {
        assert_eq!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::Format)
        );
        assert_eq!(SigningSecret::parse("whsec_***"), Err(SecretError::Format));
        assert_eq!(
            SigningSecret::parse("whsec_c2hvcnQ="),
            Err(SecretError::Length)
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(SigningSecret::parse(&long), Err(SecretError::Length));
    }

    #[test]
    fn ed25519_keys_round_trip_and_stay_hidden() {
        let key = Ed25519Key::generate();
        let parsed = SigningKey::parse(key.expose()).expect("parses");
        assert_eq!(parsed, SigningKey::Ed25519(key.clone()));
        assert_eq!(parsed.scheme(), SignatureScheme::Ed25519);
        assert!(key.public_key().starts_with("whpk_"));
        assert_eq!(
            parsed.shown_to_owner(),
            key.public_key(),
            "never the private key"
        );
        assert!(!format!("{parsed:?}").contains(&key.expose()[5..]));
        for bad in ["whsk_", "whsk_c2hvcnQ=", "whsk_***"] {
            assert_eq!(SigningKey::parse(bad), Err(SecretError::Ed25519), "{bad}");
        }
    }

    #[test]
    fn the_previous_key_signs_until_the_grace_ends() {
        let until = OffsetDateTime::from_unix_timestamp(1_000).expect("time");
        let current = SigningKey::generate(SignatureScheme::Hmac);
        let old = SigningKey::generate(SignatureScheme::Hmac);
        let signing = Signing {
            key: current.clone(),
            previous: Some(PreviousKey {
                key: old.clone(),
                until,
            }),
        };
        let at = |t| signing.keys_at(t).cloned().collect::<Vec<_>>();
        assert_eq!(at(999), [current.clone(), old]);
        assert_eq!(at(1_000), [current]);
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        assert_ne!(a, b);
        assert_eq!(SigningSecret::parse(a.expose()), Ok(a.clone()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
