//! Signing secrets in the Standard Webhooks format: `whsec_` + base64 of the key bytes.

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;

pub const SECRET_PREFIX: &str = "whsec_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
const GENERATED_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("must start with \"whsec_\" followed by base64")]
    Format,
    #[error("key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes once base64-decoded")]
    Length,
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
    fn generated_secrets_parse_and_differ() {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        assert_ne!(a, b);
        assert_eq!(SigningSecret::parse(a.expose()), Ok(a.clone()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
