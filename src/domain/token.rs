//! Company-scoped API tokens: `twk_` + base64url of 32 random bytes. Only their SHA-256 hash
//! is stored; the token is shown once, when issued.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const TOKEN_PREFIX: &str = "twk_";
const TOKEN_BYTES: usize = 32;

/// A freshly issued token. Neither `Debug` nor `Display` reveals it.
pub struct CompanyToken(Zeroizing<String>);

impl CompanyToken {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        rand::rng().fill_bytes(bytes.as_mut());
        Self(Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes.as_ref())
        )))
    }

    /// The token, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        token_hash(&self.0)
    }
}

impl std::fmt::Debug for CompanyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompanyToken(<redacted>)")
    }
}

/// What is stored of a token, and looked up for one presented.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_stored_as_their_hash() {
        let (a, b) = (CompanyToken::generate(), CompanyToken::generate());
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(a.hash(), token_hash(a.expose()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }
}
