//! The SSRF guard at the network: host names are resolved with a [`HostResolver`] and only the
//! addresses the [`TargetPolicy`] permits are kept, both when a webhook is saved (so a name
//! that points only inside is refused with a reason) and at every connection, which goes to
//! an address checked then (a name that answers differently the second time, DNS rebinding,
//! is caught there).

use std::{
    error::Error,
    fmt, io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::{EndpointUrl, TargetPolicy};

/// Turns a host name into addresses: the system's resolver, or a scripted one in tests.
pub trait HostResolver: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(resolved.map(|addr| addr.ip()).collect())
        })
    }
}

/// The resolver's refusal; found again in the error chain to classify the attempt.
#[derive(Debug)]
pub struct BlockedTarget(pub String);

impl fmt::Display for BlockedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "only addresses the SSRF guard refuses: {}", self.0)
    }
}

impl Error for BlockedTarget {}

/// How long saving a webhook waits for its host name to resolve: past it, or when the name
/// does not resolve at all, it is saved, and every attempt checks it again.
const SAVE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolver and the policy it enforces.
#[derive(Clone)]
pub struct TargetGuard {
    resolver: Arc<dyn HostResolver>,
    policy: Arc<TargetPolicy>,
}

impl TargetGuard {
    pub fn new(resolver: Arc<dyn HostResolver>, policy: TargetPolicy) -> Self {
        Self {
            resolver,
            policy: Arc::new(policy),
        }
    }

    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// The addresses of `host` the policy permits.
    async fn permitted(&self, host: &str) -> Result<Vec<IpAddr>, Refused> {
        let addresses = self.resolver.lookup(host).await.map_err(Refused::Lookup)?;
        let (permitted, refused): (Vec<_>, Vec<_>) = addresses
            .into_iter()
            .partition(|ip| self.policy.refusal(*ip).is_none());
        if permitted.is_empty() {
            let refused: Vec<String> = refused
                .iter()
                .filter_map(|ip| Some(format!("{ip}, a {} address", self.policy.refusal(*ip)?)))
                .collect();
            return Err(Refused::Blocked(BlockedTarget(refused.join("; "))));
        }
        Ok(permitted)
    }

    /// Checks a URL being saved: a name that resolves only to refused addresses is refused,
    /// naming them. (IP literals and `localhost` were checked when the URL was parsed.)
    pub async fn check(&self, url: &EndpointUrl) -> Result<(), BlockedTarget> {
        let Some(url::Host::Domain(host)) = url.as_url().host() else {
            return Ok(());
        };
        if self.policy.allow_private {
            return Ok(());
        }
        match tokio::time::timeout(SAVE_LOOKUP_TIMEOUT, self.permitted(host)).await {
            Ok(Err(Refused::Blocked(blocked))) => Err(blocked),
            Ok(Err(Refused::Lookup(_)) | Ok(_)) | Err(_) => Ok(()),
        }
    }
}

/// Why a host yields no address to connect to.
enum Refused {
    Lookup(io::Error),
    Blocked(BlockedTarget),
}

impl Resolve for TargetGuard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let permitted =
                guard
                    .permitted(name.as_str())
                    .await
                    .map_err(|refused| match refused {
                        Refused::Lookup(e) => Box::new(e) as Box<dyn Error + Send + Sync>,
                        Refused::Blocked(blocked) => Box::new(blocked),
                    })?;
            Ok(Box::new(permitted.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}
