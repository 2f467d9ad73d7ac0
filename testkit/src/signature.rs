//! Standard Webhooks verification, as a receiver's library does it: the `webhook-signature`
//! header holds space-separated `version,signature` entries, and the message passes when one
//! `v1` entry is the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret's key
//! (the base64 after `whsec_`).

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Whether `signature_header` carries a valid `v1` signature of (`id`, `timestamp`, `body`)
/// under `secret` (`whsec_...`). A malformed secret verifies nothing.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|key| STANDARD.decode(key).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    signature_header.split(' ').any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|signature| STANDARD.decode(signature).ok())
            .is_some_and(|signature| bool::from(signature.ct_eq(expected.as_slice())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn accepts_the_specifications_test_vector() {
        assert!(verify(SECRET, ID, TIMESTAMP, BODY, SIGNATURE));
    }

    #[test]
    fn one_matching_entry_among_several_passes() {
        let header = format!("v1,bm9wZQ== {SIGNATURE} v1a,c29tZXRoaW5n");
        assert!(verify(SECRET, ID, TIMESTAMP, BODY, &header));
    }

    #[test]
    fn anything_changed_fails() {
        assert!(!verify(SECRET, ID, "1614265331", BODY, SIGNATURE));
        assert!(!verify(SECRET, "msg_other", TIMESTAMP, BODY, SIGNATURE));
        assert!(!verify(SECRET, ID, TIMESTAMP, b"{}", SIGNATURE));
        assert!(!verify(
            SECRET,
            ID,
            TIMESTAMP,
            BODY,
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!verify(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ID,
            TIMESTAMP,
            BODY,
            SIGNATURE
        ));
        assert!(!verify(SECRET, ID, TIMESTAMP, BODY, ""));
    }
}
