//! Standard Webhooks verification, as a receiver's library does it: the `webhook-signature`
//! header holds space-separated `version,signature` entries, and the message passes when one
//! entry verifies: a `v1` entry is the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under
//! the secret's key (the base64 after `whsec_`), a `v1a` entry the base64 Ed25519 signature of
//! the same content under the key pair whose public key is `whpk_` + base64 (verified with
//! `ring`, not with the crate the worker signs with).

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

/// Whether `signature_header` carries a `v1a` signature of (`id`, `timestamp`, `body`) that
/// verifies under `public_key` (`whpk_...`).
pub fn verify_ed25519(
    public_key: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
) -> bool {
    let Some(key) = public_key
        .strip_prefix("whpk_")
        .and_then(|key| STANDARD.decode(key).ok())
    else {
        return false;
    };
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    signature_header.split(' ').any(|entry| {
        entry
            .strip_prefix("v1a,")
            .and_then(|signature| STANDARD.decode(signature).ok())
            .is_some_and(|signature| key.verify(&message, &signature).is_ok())
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
    fn ed25519_entries_verify_under_their_public_key() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("key pair");
        let public = format!("whpk_{}", STANDARD.encode(pair.public_key().as_ref()));
        let signed = pair.sign(b"msg_1.1614265330.{}");
        let header = format!("v1,bm9wZQ== v1a,{}", STANDARD.encode(signed.as_ref()));
        assert!(verify_ed25519(
            &public,
            "msg_1",
            "1614265330",
            b"{}",
            &header
        ));
        assert!(!verify_ed25519(
            &public,
            "msg_2",
            "1614265330",
            b"{}",
            &header
        ));
        assert!(!verify_ed25519(
            &public,
            "msg_1",
            "1614265330",
            b"{ }",
            &header
        ));
        let other = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).expect("key pair");
        let other = format!("whpk_{}", STANDARD.encode(other.public_key().as_ref()));
        assert!(!verify_ed25519(
            &other,
            "msg_1",
            "1614265330",
            b"{}",
            &header
        ));
        assert!(
            !verify(SECRET, "msg_1", "1614265330", b"{}", &header),
            "v1a is not v1"
        );
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
