//! A webhook's own request headers (an `Authorization` its endpoint wants, a tenant key):
//! checked when set, sent with every attempt, sealed at rest like signing keys.

use std::collections::BTreeMap;

/// Headers a webhook may carry at most.
pub const MAX_HEADERS: usize = 20;
/// The longest value of one header.
pub const MAX_VALUE_LEN: usize = 1024;
/// The longest a header name may be.
pub const MAX_NAME_LEN: usize = 64;
/// Names and values together, at most: every attempt sends them, and the attempt log keeps them.
pub const MAX_TOTAL_LEN: usize = 8 * 1024;

/// Headers HTTP itself or the worker sets: a webhook cannot override them.
const RESERVED: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
];
/// Prefixes of reserved names: the Standard Webhooks headers, ours, and hop-by-hop proxy ones.
const RESERVED_PREFIXES: &[&str] = &["webhook-", "x-tesoro-", "proxy-"];

/// Validated custom headers: lowercase names, each once, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("at most {MAX_HEADERS} headers")]
    TooMany,
    #[error(
        "{0:?} is not an HTTP header name (1 to {MAX_NAME_LEN} letters, digits and !#$%&'*+-.^_`|~)"
    )]
    BadName(String),
    #[error("header {0} is set by HTTP or by the worker and cannot be given")]
    Reserved(String),
    #[error("header {0} is given twice (names are case-insensitive)")]
    Duplicate(String),
    #[error(
        "the value of header {0} must be 1 to {MAX_VALUE_LEN} visible ASCII characters \
         (spaces only inside)"
    )]
    BadValue(String),
    #[error("headers must total at most {MAX_TOTAL_LEN} bytes")]
    TooLarge,
    #[error("header {0} is {HIDDEN} (keep the stored value) but none is stored: give its value")]
    HiddenWithoutValue(String),
}

/// What the API and the attempt log show for a sensitive header's value: it is sent with every
/// attempt, never shown again. Sent back in an edit, it keeps the stored value.
pub const HIDDEN: &str = "***";

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_VALUE_LEN).contains(&bytes.len())
        && bytes.iter().all(|&b| b == b' ' || b.is_ascii_graphic())
        && bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
}

impl CustomHeaders {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, HeaderError> {
        let mut headers = BTreeMap::new();
        let mut total = 0;
        for (name, value) in pairs {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || lower.len() > MAX_NAME_LEN || !lower.bytes().all(is_token_char) {
                return Err(HeaderError::BadName(name));
            }
            if RESERVED.contains(&lower.as_str())
                || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
            {
                return Err(HeaderError::Reserved(lower));
            }
            if !valid_value(&value) {
                return Err(HeaderError::BadValue(lower));
            }
            total += lower.len() + value.len();
            if headers.insert(lower.clone(), value).is_some() {
                return Err(HeaderError::Duplicate(lower));
            }
            if headers.len() > MAX_HEADERS {
                return Err(HeaderError::TooMany);
            }
        }
        if total > MAX_TOTAL_LEN {
            return Err(HeaderError::TooLarge);
        }
        Ok(Self(headers))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The headers as the API shows them: sensitive values `HIDDEN`.
    pub fn shown(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(name, value)| {
                let value = if is_sensitive(name) { HIDDEN } else { value };
                (name.clone(), value.to_owned())
            })
            .collect()
    }

    /// `given`, as an edit of what `shown` gave, with each `HIDDEN` value of a sensitive
    /// header replaced by the one `self` holds under that name.
    pub fn keep_hidden(
        &self,
        given: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, HeaderError> {
        given
            .into_iter()
            .map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                if value != HIDDEN || !is_sensitive(&lower) {
                    return Ok((name, value));
                }
                match self.0.get(&lower) {
                    Some(stored) => Ok((name, stored.clone())),
                    None => Err(HeaderError::HiddenWithoutValue(lower)),
                }
            })
            .collect()
    }

    /// As stored: a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// What `to_json` wrote, checked again.
    pub fn from_json(text: &str) -> Option<Self> {
        let map: BTreeMap<String, String> = serde_json::from_str(text).ok()?;
        Self::new(map).ok()
    }
}

/// Whether a header's value is a credential, by its name (lowercase, as `CustomHeaders` and
/// HTTP libraries keep names): the attempt log keeps it masked.
pub fn is_sensitive(name: &str) -> bool {
    name == "cookie"
        || ["auth", "token", "secret", "key", "password"]
            .iter()
            .any(|part| name.contains(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Result<CustomHeaders, HeaderError> {
        CustomHeaders::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn names_are_lowercased_and_values_kept() {
        let set = headers(&[("Authorization", "Bearer abc"), ("X-Tenant", "t 1")]).expect("valid");
        let pairs: Vec<_> = set.iter().collect();
        assert_eq!(
            pairs,
            [("authorization", "Bearer abc"), ("x-tenant", "t 1")]
        );
        assert_eq!(CustomHeaders::from_json(&set.to_json()), Some(set));
        assert!(headers(&[]).expect("none").is_empty());
    }

    #[test]
    fn bad_headers_are_refused_naming_the_header() {
        let long_value = "v".repeat(MAX_VALUE_LEN + 1);
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let cases: Vec<(Vec<(&str, &str)>, HeaderError)> = vec![
            (vec![("", "v")], HeaderError::BadName(String::new())),
            (
                vec![("x tenant", "v")],
                HeaderError::BadName("x tenant".into()),
            ),
            (vec![("x:y", "v")], HeaderError::BadName("x:y".into())),
            (vec![("é", "v")], HeaderError::BadName("é".into())),
            (vec![("Host", "evil")], HeaderError::Reserved("host".into())),
            (
                vec![("Content-Length", "1")],
                HeaderError::Reserved("content-length".into()),
            ),
            (
                vec![("Transfer-Encoding", "chunked")],
                HeaderError::Reserved("transfer-encoding".into()),
            ),
            (
                vec![("Connection", "close")],
                HeaderError::Reserved("connection".into()),
            ),
            (
                vec![("webhook-signature", "v1,x")],
                HeaderError::Reserved("webhook-signature".into()),
            ),
            (
                vec![("X-Tesoro-Attempt", "9")],
                HeaderError::Reserved("x-tesoro-attempt".into()),
            ),
            (
                vec![("Proxy-Authorization", "x")],
                HeaderError::Reserved("proxy-authorization".into()),
            ),
            (
                vec![("x-a", "line\r\nx-b: smuggled")],
                HeaderError::BadValue("x-a".into()),
            ),
            (vec![("x-a", "")], HeaderError::BadValue("x-a".into())),
            (
                vec![("x-a", " padded")],
                HeaderError::BadValue("x-a".into()),
            ),
            (vec![("x-a", "café")], HeaderError::BadValue("x-a".into())),
            (
                vec![("x-a", &long_value)],
                HeaderError::BadValue("x-a".into()),
            ),
            (
                vec![("X-A", "1"), ("x-a", "2")],
                HeaderError::Duplicate("x-a".into()),
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(headers(&pairs), Err(expected), "{pairs:?}");
        }
        assert_eq!(CustomHeaders::new(many), Err(HeaderError::TooMany));
        let big: Vec<(String, String)> = (0..9)
            .map(|i| (format!("x-h{i}"), "v".repeat(MAX_VALUE_LEN)))
            .collect();
        assert_eq!(CustomHeaders::new(big), Err(HeaderError::TooLarge));
    }

    #[test]
    fn credentials_are_recognised_by_name() {
        for name in [
            "authorization",
            "cookie",
            "x-api-key",
            "x-auth-token",
            "client_secret",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["x-tenant", "accept", "x-request-source"] {
            assert!(!is_sensitive(name), "{name}");
        }
    }
}
