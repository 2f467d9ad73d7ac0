//! DNS resolution with the SSRF guard: a name that resolves only to internal addresses is
//! refused, so a webhook cannot be pointed at the worker's own network through DNS.

use std::{error::Error, fmt, net::SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::is_internal_ip;

/// The resolver's refusal; found again in the error chain to classify the attempt.
#[derive(Debug)]
pub struct BlockedTarget;

impl fmt::Display for BlockedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the endpoint resolves only to private or internal addresses")
    }
}

impl Error for BlockedTarget {}

/// Resolves with the system resolver and drops internal addresses.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = resolved.filter(|a| !is_internal_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(BlockedTarget) as Box<dyn Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}
