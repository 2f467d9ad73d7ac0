//! Endpoint URLs and the SSRF rule for the addresses they may reach.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use url::{Host, Url};

const MAX_URL_LEN: usize = EndpointUrl::MAX_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must be an absolute http(s) URL")]
    NotHttp,
    #[error("must not be longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("must not contain credentials; use the webhook secret to authenticate")]
    HasCredentials,
    #[error("points to {0}, which the SSRF guard refuses")]
    PrivateTarget(String),
}

/// A subscriber's URL: absolute http or https with a host, no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    /// The longest URL a webhook may have, in bytes.
    pub const MAX_LEN: usize = 2048;

    /// Parses a URL, refusing hosts `policy` refuses on their face (IP literals in internal
    /// ranges, `localhost`). Names are resolved and checked when a webhook is saved and again
    /// at every connection (`sender::TargetGuard`).
    pub fn parse(value: &str, policy: &TargetPolicy) -> Result<Self, UrlError> {
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
        if let Some(refusal) = policy.refuses_host(&url) {
            return Err(UrlError::PrivateTarget(refusal));
        }
        Ok(Self(url))
    }

    /// A URL stored when it passed the checks of its time: its addresses are checked again
    /// at every connection.
    pub fn parse_stored(value: &str) -> Result<Self, UrlError> {
        Self::parse(value, &TargetPolicy::allow_all())
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

/// Which addresses a webhook may reach: none of the internal ones ([`internal_class`]) unless
/// private targets are allowed outright (local testing) or the address falls in one of
/// `delivery.allowed_targets`.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    pub allow_private: bool,
    pub allowed: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn allow_all() -> Self {
        Self {
            allow_private: true,
            allowed: Vec::new(),
        }
    }

    /// Why `ip` may not be reached (its address class), or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private || self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        internal_class(ip)
    }

    /// Why the URL's host, if it is an IP literal or `localhost`, may not be reached.
    pub fn refuses_host(&self, url: &Url) -> Option<String> {
        let ip = match url.host()? {
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name != "localhost" && !name.ends_with(".localhost") {
                    return None;
                }
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        };
        self.refusal(ip)
            .map(|class| format!("{ip}, a {class} address"))
    }
}

/// Whether a webhook must not reach `ip` unless private targets are allowed.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    internal_class(ip).is_some()
}

/// The class of an address a webhook must not reach by default: loopback, private, link-local
/// (cloud metadata), CGNAT, unspecified, multicast, documentation and the like, and IPv6
/// addresses that embed such an IPv4 address (mapped, compatible, 6to4, Teredo) or reach IPv4
/// through a translator (NAT64). `None` for a public address.
pub fn internal_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified (this network)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (CGNAT)"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignment"
    } else if a == 198 && (18..20).contains(&b) {
        "benchmarking"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4).map(|_| "IPv4-mapped internal");
    }
    // IPv4-translated ::ffff:0:a.b.c.d (SIIT), for paths through a translator.
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return internal_v4(embedded(s[6], s[7])).map(|_| "IPv4-translated internal");
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[..6] == [0; 6] {
        // IPv4-compatible ::a.b.c.d (deprecated; stacks that still route it reach IPv4).
        return internal_v4(embedded(s[6], s[7])).map(|_| "IPv4-compatible internal");
    } else if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 tunnels to the IPv4 address AA.BB.CC.DD.
        return internal_v4(embedded(s[1], s[2])).map(|_| "6to4 internal");
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo: the server's IPv4 in bits 32-63, the client's, inverted, in bits 96-127.
        let server = embedded(s[2], s[3]);
        let client = embedded(!s[6], !s[7]);
        return (internal_v4(server).is_some() || internal_v4(client).is_some())
            .then_some("Teredo internal");
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "unique local"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "site-local"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        "NAT64"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded() -> TargetPolicy {
        TargetPolicy::default()
    }

    #[test]
    fn accepts_http_and_https_only() {
        assert!(EndpointUrl::parse("https://example.com/hook", &guarded()).is_ok());
        assert!(EndpointUrl::parse("http://example.com:8080/x?y=1", &guarded()).is_ok());
        for bad in [
            "ftp://example.com",
            "example.com/hook",
            "",
            "https://",
            "javascript:x",
        ] {
            assert_eq!(
                EndpointUrl::parse(bad, &guarded()),
                Err(UrlError::NotHttp),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_credentials_and_huge_urls() {
        assert_eq!(
            EndpointUrl::parse("https://u:p@example.com/", &guarded()),
            Err(UrlError::HasCredentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            EndpointUrl::parse(&long, &guarded()),
            Err(UrlError::TooLong)
        );
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
            assert!(
                matches!(
                    EndpointUrl::parse(internal, &guarded()),
                    Err(UrlError::PrivateTarget(_))
                ),
                "{internal}"
            );
            assert!(
                EndpointUrl::parse(internal, &TargetPolicy::allow_all()).is_ok(),
                "{internal}"
            );
        }
        assert!(!is_internal_ip("93.184.216.34".parse().expect("ip")));
        assert!(!is_internal_ip("2606:2800:220:1::1".parse().expect("ip")));
    }

    #[test]
    fn every_internal_range_is_named() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("::1", Some("loopback")),
            ("::ffff:192.168.0.1", Some("IPv4-mapped internal")),
            ("::ffff:93.184.216.34", None),
            ("::ffff:0:7f00:1", Some("IPv4-translated internal")),
            ("::ffff:0:5db8:d822", None),
            ("::10.0.0.1", Some("IPv4-compatible internal")),
            ("::127.0.0.1", Some("IPv4-compatible internal")),
            // 6to4 of 192.168.1.1 and of 93.184.216.34.
            ("2002:c0a8:0101::1", Some("6to4 internal")),
            ("2002:5db8:d822::1", None),
            // Teredo with the client 10.0.0.1 (inverted: f5ff:fffe), and with a public server
            // and client.
            ("2001:0:5db8:d822::f5ff:fffe", Some("Teredo internal")),
            ("2001:0:5db8:d822::a247:2777", None),
            ("2001:0:0a00:0001::a247:2777", Some("Teredo internal")),
            ("fec0::1", Some("site-local")),
            ("fd00::1", Some("unique local")),
            ("fe80::1", Some("link-local")),
            ("64:ff9b::a00:1", Some("NAT64")),
            ("2606:2800:220:1::1", None),
        ];
        for (ip, class) in cases {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(internal_class(ip), class, "{ip}");
        }
    }

    #[test]
    fn allowed_targets_open_their_ranges_only() {
        let policy = TargetPolicy {
            allow_private: false,
            allowed: vec!["10.20.0.0/16".parse().expect("cidr")],
        };
        assert_eq!(policy.refusal("10.20.3.4".parse().expect("ip")), None);
        assert_eq!(
            policy.refusal("10.21.0.1".parse().expect("ip")),
            Some("private")
        );
        let url = Url::parse("http://127.0.0.1/").expect("url");
        assert_eq!(
            policy.refuses_host(&url).as_deref(),
            Some("127.0.0.1, a loopback address")
        );
        let localhost = Url::parse("http://localhost:9/").expect("url");
        assert!(policy.refuses_host(&localhost).is_some());
        assert_eq!(TargetPolicy::allow_all().refuses_host(&localhost), None);
    }
}
