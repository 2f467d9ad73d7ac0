//! Layered configuration: built-in defaults (`config/default.toml`), then an optional file, then
//! `TESORO_WEBHOOKS__<SECTION>__<KEY>` environment variables, then validation that names the key.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytesize::ByteSize;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;

use crate::{
    domain::KeyRing,
    retry::{Jitter, RetrySchedule},
};

/// The defaults, compiled in so `run` works with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variables with this prefix override file values; `__` separates levels.
pub const ENV_PREFIX: &str = "TESORO_WEBHOOKS__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist or is not a file")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub amqp: AmqpConfig,
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub delivery: DeliveryConfig,
    pub endpoint_health: crate::endpoint_health::Policy,
    pub circuit_breaker: crate::circuit::Policy,
    pub security: SecurityConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line of text each.
    Text,
    /// For machines: one JSON object per line.
    Json,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    pub url: String,
    /// Topic exchange the CRM services publish envelopes to.
    pub events_exchange: String,
    /// Prefix of every exchange and queue the worker owns, so tests and tenants of one broker
    /// never collide.
    pub prefix: String,
    /// Unacked messages per consumer: bounds concurrent work per process.
    pub prefetch: u16,
    /// Tries of a message whose handling fails for a reason of its own before it is
    /// quarantined (outages do not count).
    pub delivery_limit: u32,
    /// How long connecting to one broker node (TCP and the AMQP handshake) may take before
    /// the next node is tried.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Quorum queues the events are spread over (by event id), each led by a different node
    /// of a cluster; 1 keeps the single events queue.
    pub event_queues: u16,
}

/// At most this many event queues: each holds a quorum queue's processes on every node.
pub const MAX_EVENT_QUEUES: u16 = 64;

impl AmqpConfig {
    /// The prefetch of each events queue's consumer: `prefetch` shared between them, so that
    /// it bounds the events in progress per process however many queues there are.
    pub fn events_prefetch(&self) -> u16 {
        self.prefetch.div_ceil(self.event_queues.max(1)).max(1)
    }
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &redact_urls(&self.url))
            .field("events_exchange", &self.events_exchange)
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("delivery_limit", &self.delivery_limit)
            .field("connect_timeout", &self.connect_timeout)
            .field("event_queues", &self.event_queues)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub pool_timeout: Duration,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_urls(&self.url))
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .finish()
    }
}

/// `urls` (one, or several separated by commas) with every password replaced by `***`: how a
/// broker or database URL appears in logs, errors and `Debug`. A database URL of several
/// hosts (`postgres://u:pw@db1:5432,db2:5432/tw`) splits into its first part and bare hosts.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_url(piece: &str) -> String {
    let piece = piece.trim();
    match url::Url::parse(piece) {
        Ok(mut parsed) if parsed.has_host() => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            redact_password_parameter(parsed.as_str())
        }
        // A further host of a database URL: `host:port`, then perhaps the path and query.
        _ if !piece.contains('@') && !piece.contains("://") => redact_password_parameter(piece),
        _ => "(unparsable url)".to_owned(),
    }
}

/// `piece` with the value of a `password=` query parameter (libpq reads one) replaced.
fn redact_password_parameter(piece: &str) -> String {
    let Some((base, query)) = piece.split_once('?') else {
        return piece.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// How long the delivery log is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Succeeded deliveries, with their attempts and events, are removed this long after they
    /// were created.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Failed deliveries are kept this long (at least `max_age`): someone may still retry them.
    #[serde(with = "humantime_serde")]
    pub failed_max_age: Duration,
    /// How often one of the workers retires old partitions and creates the next ones.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The span of `event_at` one partition of the log holds: retention drops whole
    /// partitions, so rows go up to this long after their age is reached.
    #[serde(with = "humantime_serde")]
    pub partition: Duration,
}

/// `retention.partition` when nothing sets it.
pub const DEFAULT_PARTITION: Duration = Duration::from_secs(24 * 3600);

/// Encryption at rest of webhook signing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `id:base64key` entries: the first seals, all open (see `domain::KeyRing`).
    #[serde(deserialize_with = "key_ring")]
    pub secret_keys: Arc<KeyRing>,
}

fn key_ring<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<KeyRing>, D::Error> {
    let entries = Vec::<String>::deserialize(deserializer)?;
    KeyRing::parse(&entries)
        .map(Arc::new)
        .map_err(|e| serde::de::Error::custom(format!("security.secret_keys: {e}")))
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub admin_token: String,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("admin_token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub retry_schedule: RetrySchedule,
    /// How far each retry delay is spread (see `Jitter`).
    pub retry_jitter: Jitter,
    /// Deliveries in progress at once, across all webhooks.
    pub max_in_flight: usize,
    /// Attempts in flight per webhook before further work for it is deferred.
    pub max_in_flight_per_endpoint: usize,
    pub max_response_body: ByteSize,
    /// Events (envelopes as published) longer than this are quarantined, not delivered.
    pub max_event_size: ByteSize,
    pub allow_private_targets: bool,
    /// Internal ranges opened to webhooks although the SSRF guard is on.
    pub allowed_targets: Vec<ipnet::IpNet>,
}

impl DeliveryConfig {
    /// The SSRF guard's rule for what webhooks may reach.
    pub fn target_policy(&self) -> crate::domain::TargetPolicy {
        crate::domain::TargetPolicy {
            allow_private: self.allow_private_targets,
            allowed: self.allowed_targets.clone(),
        }
    }

    /// `max_event_size` in bytes (validated to fit).
    pub fn max_event_bytes(&self) -> usize {
        usize::try_from(self.max_event_size.as_u64()).unwrap_or(usize::MAX)
    }
}

/// Bounds of `delivery.max_event_size`: below 1 KiB hardly any event fits; above 64 MiB the
/// events in flight (one per delivery, one per retry job) could take gigabytes.
const MIN_EVENT_SIZE: u64 = 1024;
const MAX_EVENT_SIZE: u64 = 64 * 1024 * 1024;

impl Config {
    /// Defaults, then `file`, then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// The defaults alone, as a test or a tool starts from.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::extract(Figment::from(Toml::string(DEFAULT_TOML)))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::extract(figment.merge(env))
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        // The parser's message quotes the whole URL, password included: not repeated here.
        if !crate::broker::is_amqp_url(&self.amqp.url) {
            return invalid(
                "amqp.url",
                "must be an amqp:// or amqps:// URL, or several separated by commas",
            );
        }
        // Queue names are the prefix plus at most ~40 bytes (".retry.<delay>"); AMQP names
        // stop at 255 bytes.
        if self.amqp.prefix.is_empty()
            || self.amqp.prefix.contains(char::is_whitespace)
            || self.amqp.prefix.len() > 200
        {
            return invalid("amqp.prefix", "must be 1 to 200 bytes, without spaces");
        }
        // Below the broker's own limit, which also counts outages' hand-backs.
        if !(1..=25).contains(&self.amqp.delivery_limit) {
            return invalid("amqp.delivery_limit", "must be 1 to 25");
        }
        if self.amqp.events_exchange.is_empty() || self.amqp.events_exchange.len() > 255 {
            return invalid("amqp.events_exchange", "must be 1 to 255 bytes");
        }
        if self.amqp.prefetch == 0 {
            return invalid("amqp.prefetch", "must be at least 1");
        }
        let timeout = self.amqp.connect_timeout;
        if timeout.is_zero() || timeout > Duration::from_secs(600) {
            return invalid(
                "amqp.connect_timeout",
                "must be more than zero and at most 10m",
            );
        }
        if !(1..=MAX_EVENT_QUEUES).contains(&self.amqp.event_queues) {
            return invalid(
                "amqp.event_queues",
                &format!("must be 1 to {MAX_EVENT_QUEUES}"),
            );
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.api.admin_token.trim().is_empty() {
            return invalid("api.admin_token", "must not be empty");
        }
        if self.delivery.max_in_flight == 0 {
            return invalid("delivery.max_in_flight", "must be at least 1");
        }
        if self.delivery.max_in_flight_per_endpoint == 0 {
            return invalid("delivery.max_in_flight_per_endpoint", "must be at least 1");
        }
        if self.delivery.timeout.is_zero() {
            return invalid("delivery.timeout", "must be greater than zero");
        }
        if !(MIN_EVENT_SIZE..=MAX_EVENT_SIZE).contains(&self.delivery.max_event_size.as_u64()) {
            return invalid("delivery.max_event_size", "must be 1KiB to 64MiB");
        }
        let health = &self.endpoint_health;
        if health.disable_after < Duration::from_secs(1) {
            return invalid("endpoint_health.disable_after", "must be at least 1s");
        }
        if health.disable_after > Duration::from_secs(365 * 24 * 3600) {
            return invalid("endpoint_health.disable_after", "must be at most 365 days");
        }
        if health.min_failures == 0 {
            return invalid("endpoint_health.min_failures", "must be at least 1");
        }
        if health.failing_event_interval < Duration::from_secs(1) {
            return invalid(
                "endpoint_health.failing_event_interval",
                "must be at least 1s",
            );
        }
        self.validate_circuit_breaker()?;
        let retention = &self.retention;
        if retention.max_age < Duration::from_secs(1) {
            return invalid("retention.max_age", "must be at least 1s");
        }
        if retention.failed_max_age < retention.max_age {
            return invalid(
                "retention.failed_max_age",
                "must be at least retention.max_age",
            );
        }
        // Far enough that the boundary's millisecond fits a UUID's 48 bits.
        if retention.failed_max_age > Duration::from_secs(100 * 365 * 24 * 3600) {
            return invalid("retention.failed_max_age", "must be at most 100 years");
        }
        if retention.interval < Duration::from_millis(100) {
            return invalid("retention.interval", "must be at least 100ms");
        }
        if retention.partition < Duration::from_secs(1) || retention.partition.subsec_nanos() != 0 {
            return invalid("retention.partition", "must be whole seconds, at least 1s");
        }
        if retention.partition > Duration::from_secs(366 * 24 * 3600) {
            return invalid("retention.partition", "must be at most 366 days");
        }
        Ok(())
    }

    fn validate_circuit_breaker(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| {
            Err(ConfigError::Invalid(format!(
                "circuit_breaker.{key}: {why}"
            )))
        };
        let circuit = &self.circuit_breaker;
        if circuit.failures == 0 {
            return invalid("failures", "must be at least 1");
        }
        if !(circuit.failure_ratio > 0.0 && circuit.failure_ratio <= 1.0) {
            return invalid("failure_ratio", "must be above 0 and at most 1");
        }
        if circuit.min_attempts == 0 {
            return invalid("min_attempts", "must be at least 1");
        }
        if circuit.window < Duration::from_secs(1) {
            return invalid("window", "must be at least 1s");
        }
        if circuit.probe_interval < Duration::from_millis(100) {
            return invalid("probe_interval", "must be at least 100ms");
        }
        if circuit.max_probe_interval < circuit.probe_interval {
            return invalid("max_probe_interval", "must be at least probe_interval");
        }
        if circuit.max_probe_interval > Duration::from_secs(24 * 3600) {
            return invalid("max_probe_interval", "must be at most 24h");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Env {
        Env::prefixed("TESORO_WEBHOOKS_TEST_UNSET_PREFIX__").split("__")
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::defaults().expect("defaults load");
        assert_eq!(config.amqp.prefix, "webhooks");
        assert_eq!(config.amqp.events_exchange, "tesoro.events");
        assert_eq!(config.delivery.timeout, Duration::from_secs(5));
        assert_eq!(
            config.delivery.retry_schedule.delays(),
            &[60, 300, 1800, 7200].map(Duration::from_secs)
        );
        assert_eq!(config.delivery.max_response_body.as_u64(), 64 * 1024);
        assert_eq!(config.delivery.max_event_bytes(), 1024 * 1024);
        assert!(!config.delivery.allow_private_targets);
        assert_eq!(
            config.retention.max_age,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(
            config.retention.failed_max_age,
            Duration::from_secs(90 * 24 * 3600)
        );
    }

    #[test]
    fn amqp_url_may_list_the_nodes_of_a_cluster() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "[amqp]\nurl = \"amqp://tw:pw@10.0.0.1:5672/%2f, amqps://tw:pw@10.0.0.2:5671/%2f\""
        )
        .expect("write");
        assert!(Config::load_from(Some(file.path()), no_env()).is_ok());
    }

    #[test]
    fn file_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "[delivery]\ntimeout = \"2s\"\nretry_schedule = [\"200ms\", \"400ms\"]"
        )
        .expect("write");
        let config = Config::load_from(Some(file.path()), no_env()).expect("loads");
        assert_eq!(config.delivery.timeout, Duration::from_secs(2));
        assert_eq!(config.delivery.retry_schedule.delays().len(), 2);
        assert_eq!(config.amqp.prefix, "webhooks");
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API fixes the closure's error type"
    )]
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESORO_WEBHOOKS__AMQP__PREFIX", "from_env");
            jail.set_env("TESORO_WEBHOOKS__DELIVERY__TIMEOUT", "3s");
            let config = Config::load(None).expect("loads");
            assert_eq!(config.amqp.prefix, "from_env");
            assert_eq!(config.delivery.timeout, Duration::from_secs(3));
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Config::load_from(Some(Path::new("/nonexistent/x.toml")), no_env())
            .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/x.toml"), "{err}");
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Config::load_from(Some(dir.path()), no_env()).expect_err("a directory");
        assert!(err.to_string().contains("is not a file"), "{err}");
    }

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        write!(file, "{toml}").expect("write");
        Config::load_from(Some(file.path()), no_env())
    }

    #[test]
    fn bad_values_name_the_key() {
        let long_prefix = format!("[amqp]\nprefix = \"{}\"", "p".repeat(201));
        let long_exchange = format!("[amqp]\nevents_exchange = \"{}\"", "e".repeat(256));
        let cases = [
            ("[delivery]\nretry_schedule = []", "retry_schedule"),
            (
                "[retention]\npartition = \"500ms\"",
                "retention.partition: must be whole seconds, at least 1s",
            ),
            (
                "[retention]\npartition = \"1s 500ms\"",
                "retention.partition: must be whole seconds",
            ),
            (
                "[retention]\npartition = \"400d\"",
                "retention.partition: must be at most 366 days",
            ),
            (
                "[delivery]\nretry_schedule = [\"5m\", \"1m\"]",
                "retry_schedule",
            ),
            (
                "[delivery]\nretry_jitter = 0.7",
                "retry_jitter must be between 0 and 0.5",
            ),
            ("[delivery]\nretry_jitter = \"10%\"", "retry_jitter"),
            ("[delivery]\ntimeout = \"soon\"", "timeout"),
            (
                "[endpoint_health]\ndisable_after = \"0s\"",
                "endpoint_health.disable_after",
            ),
            (
                "[endpoint_health]\nmin_failures = 0",
                "endpoint_health.min_failures",
            ),
            (
                "[endpoint_health]\nfailing_event_interval = \"10ms\"",
                "endpoint_health.failing_event_interval",
            ),
            (
                "[circuit_breaker]\nfailures = 0",
                "circuit_breaker.failures: must be at least 1",
            ),
            (
                "[circuit_breaker]\nfailure_ratio = 1.5",
                "circuit_breaker.failure_ratio",
            ),
            (
                "[circuit_breaker]\nprobe_interval = \"1m\"\nmax_probe_interval = \"10s\"",
                "circuit_breaker.max_probe_interval: must be at least probe_interval",
            ),
            (
                "[circuit_breaker]\nwindow = \"0s\"",
                "circuit_breaker.window",
            ),
            ("[circuit_breaker]\nenabled = \"yes\"", "enabled"),
            ("[delivery]\ntimeout = \"0s\"", "delivery.timeout"),
            ("[amqp]\nprefix = \"\"", "amqp.prefix"),
            (&long_prefix, "amqp.prefix"),
            (&long_exchange, "amqp.events_exchange"),
            ("[amqp]\nurl = \"localhost:5672\"", "amqp.url"),
            ("[amqp]\nurl = \"guest:s3cret@rabbit:5672\"", "amqp.url"),
            ("[amqp]\nurl = \"http://127.0.0.1\"", "amqp.url"),
            (
                "[delivery]\nretry_schedule = [\"1m\", \"1000000h\"]",
                "retry_schedule delay 2 is longer than 30 days",
            ),
            ("[amqp]\nprefetch = 0", "amqp.prefetch"),
            ("[amqp]\nconnect_timeout = \"0s\"", "amqp.connect_timeout"),
            ("[amqp]\nconnect_timeout = \"11m\"", "amqp.connect_timeout"),
            ("[amqp]\ndelivery_limit = 0", "amqp.delivery_limit"),
            ("[amqp]\nevent_queues = 0", "amqp.event_queues"),
            ("[amqp]\nevent_queues = 65", "amqp.event_queues"),
            (
                "[amqp]\nurl = \"amqp://127.0.0.1:5681/%2f, http://127.0.0.1:5682\"",
                "amqp.url",
            ),
            ("[amqp]\ndelivery_limit = 26", "amqp.delivery_limit"),
            ("[api]\nlisten = \"not an address\"", "listen"),
            ("[api]\nadmin_token = \" \"", "api.admin_token"),
            (
                "[delivery]\nmax_in_flight_per_endpoint = 0",
                "max_in_flight_per_endpoint",
            ),
            ("[delivery]\ntimeuot = \"1s\"", "timeuot"),
            (
                "[delivery]\nmax_event_size = \"1000B\"",
                "delivery.max_event_size",
            ),
            (
                "[delivery]\nmax_event_size = \"65MiB\"",
                "delivery.max_event_size",
            ),
            (
                "[delivery]\nallowed_targets = [\"10.0.0.0/33\"]",
                "allowed_targets",
            ),
            (
                "[delivery]\nallowed_targets = \"10.0.0.0/8\"",
                "allowed_targets",
            ),
        ];
        for (toml, key) in cases {
            let err = load_str(toml).expect_err(toml);
            assert!(err.to_string().contains(key), "{toml}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{toml}: {err}");
        }
    }

    #[test]
    fn debug_output_hides_tokens_passwords_and_keys() {
        let mut config = Config::defaults().expect("defaults load");
        config.amqp.url = "amqp://tw:amqp-pw@10.0.0.1:5672/%2f,amqp://tw:amqp-pw@10.0.0.2".into();
        config.database.url = "postgres://tw:pg-pw@db:5432/tw?sslmode=require".into();
        let debug = format!("{config:?}");
        for secret in ["change-me", "amqp-pw", "pg-pw", "dGVzb3Jv"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            debug.contains("10.0.0.2"),
            "the rest of the URL stays: {debug}"
        );
        assert_eq!(
            redact_urls("postgres://tw:pg-pw@db1:5432,db2:5433/tw?target_session_attrs=read-write"),
            "postgres://tw:***@db1:5432,db2:5433/tw?target_session_attrs=read-write",
            "a database URL of several hosts"
        );
        assert_eq!(
            redact_urls("postgres://tw@db1:5432/tw?password=pg-pw&sslmode=require"),
            "postgres://tw@db1:5432/tw?password=***&sslmode=require"
        );
    }

    #[test]
    fn secret_keys_must_be_configured_and_well_formed() {
        let key = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let config = load_str(&format!("[security]\nsecret_keys = [\"{key}\"]")).expect("loads");
        assert!(!config.security.secret_keys.seals_with_development_key());
        assert!(
            Config::defaults()
                .expect("defaults")
                .security
                .secret_keys
                .seals_with_development_key()
        );
        for (toml, message) in [
            (
                "[security]\nsecret_keys = []",
                "security.secret_keys: no key configured",
            ),
            (
                "[security]\nsecret_keys = [\"k1:c2hvcnQ=\"]",
                "security.secret_keys: entry 1",
            ),
        ] {
            let error = load_str(toml).expect_err(toml).to_string();
            assert!(error.contains(message), "{toml}: {error}");
            assert!(!error.contains("c2hvcnQ="), "{error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }

    #[test]
    fn the_events_queues_share_the_prefetch() {
        let mut amqp = Config::defaults().expect("defaults").amqp;
        assert_eq!(amqp.events_prefetch(), 1024);
        amqp.event_queues = 3;
        assert_eq!(amqp.events_prefetch(), 342);
        amqp.prefetch = 2;
        assert_eq!(amqp.events_prefetch(), 1);
    }
}
