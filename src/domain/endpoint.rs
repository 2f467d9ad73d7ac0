//! Endpoint URLs and the SSRF rule for the addresses they may reach.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use url::{Host, Url};

const MAX_URL_LEN: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must be an absolute http(s) URL")]
    NotHttp,
    #[error("must not be longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("must not contain credentials; use the webhook secret to authenticate")]
    HasCredentials,
    #[error("points to a private or internal address")]
    PrivateTarget,
}

/// A subscriber's URL: absolute http or https with a host, no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    /// Parses a URL; with `allow_private` false, also refuses hosts that are internal on their
    /// face (IP literals in private ranges, `localhost`). Names that resolve to internal
    /// addresses are refused at delivery time by the resolver.
    pub fn parse(value: &str, allow_private: bool) -> Result<Self, UrlError> {
        if value.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(value).map_err(|_| UrlError::NotHttp)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(UrlError::NotHttp);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::HasCredentials);
        }
        if !allow_private && host_is_internal(&url) {
            return Err(UrlError::PrivateTarget);
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// True when the URL's host is an internal address written literally, or `localhost`.
pub fn host_is_internal(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => is_internal_ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => is_internal_ip(IpAddr::V6(ip)),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => true,
    }
}

/// Addresses a webhook must not reach unless private targets are allowed: loopback, private,
/// link-local (cloud metadata), CGNAT, unspecified, multicast, documentation and the like.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x64 && ip.segments()[1] == 0xff9b) // NAT64 can reach IPv4 internals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_only() {
        assert!(EndpointUrl::parse("https://example.com/hook", false).is_ok());
        assert!(EndpointUrl::parse("http://example.com:8080/x?y=1", false).is_ok());
        for bad in [
            "ftp://example.com",
            "example.com/hook",
            "",
            "https://",
            "javascript:x",
        ] {
            assert_eq!(
                EndpointUrl::parse(bad, false),
                Err(UrlError::NotHttp),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_credentials_and_huge_urls() {
        assert_eq!(
            EndpointUrl::parse("https://u:p@example.com/", false),
            Err(UrlError::HasCredentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(EndpointUrl::parse(&long, false), Err(UrlError::TooLong));
    }

    #[test]
    fn private_targets_depend_on_the_guard() {
        for internal in [
            "http://127.0.0.1:9000/",
            "http://localhost/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://[fd00::1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ] {
            assert_eq!(
                EndpointUrl::parse(internal, false),
                Err(UrlError::PrivateTarget),
                "{internal}"
            );
            assert!(EndpointUrl::parse(internal, true).is_ok(), "{internal}");
        }
        assert!(!is_internal_ip("93.184.216.34".parse().expect("ip")));
        assert!(!is_internal_ip("2606:2800:220:1::1".parse().expect("ip")));
    }
}
