//! TLS to PostgreSQL (rustls, the ring provider), as `database.url`'s `sslmode` asks:
//!
//! - absent, or `disable`: plain TCP;
//! - `prefer` or `require`: encrypted; the server's certificate is not checked (libpq's
//!   meaning of both);
//! - `verify-ca`: encrypted, and the certificate must chain to `sslrootcert` (a PEM file);
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no `sslrootcert`: the URL
//! is rewritten for it, and the checks live in the rustls configuration.

use std::{sync::Arc, time::Duration};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StorageError;

/// A database URL as tokio-postgres takes it, and the TLS connector its `sslmode` asks for.
pub struct DatabaseTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// A connection to the database, to be driven by its owner.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// How long opening a connection may take when `database.url` sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl DatabaseTarget {
    /// Sets a server setting for the session, beside any the URL's `options` set.
    pub fn set(&mut self, setting: &str, value: &str) {
        let option = format!("-c {setting}={value}");
        let options = match self.config.get_options() {
            Some(options) => format!("{options} {option}"),
            None => option,
        };
        self.config.options(&options);
    }

    /// Opens a connection outside the pool. The URL's `connect_timeout` (libpq's: the whole
    /// establishment, login included) bounds it; tokio-postgres applies it to the TCP connect
    /// only, and a server can accept connections and never answer them.
    pub async fn open(mut self) -> Result<(tokio_postgres::Client, Connection), StorageError> {
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        self.config.connect_timeout(timeout);
        // Idempotent DDL (migrations, partition upkeep) answers with NOTICEs ("already
        // exists, skipping"), which tokio-postgres logs at INFO: only warnings are news.
        self.set("client_min_messages", "warning");
        tokio::time::timeout(timeout, self.config.connect(self.tls))
            .await
            .map_err(|_| StorageError::ConnectTimeout(timeout))?
            .map_err(StorageError::from)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Encrypt, check nothing.
    Nothing,
    /// The chain, not the name.
    Chain,
    /// The chain and the name.
    Full,
}

/// Parses `url`, taking out what tokio-postgres does not know. The URL may name several
/// hosts (`postgres://u@db1:5432,db2:5432/tw?target_session_attrs=read-write`, libpq's form,
/// which the `url` crate does not parse): its query is taken apart by hand.
pub fn target(url: &str) -> Result<DatabaseTarget, StorageError> {
    let invalid = |why: &str| StorageError::Url(why.to_owned());
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid("database.url must be a postgres:// URL"));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut sslmode = None;
    let mut root_cert = None;
    // The other parameters pass through as written: tokio-postgres, like libpq, decodes
    // `%XX` only, so re-encoding them as a form would turn a space into `+`.
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        };
        match key {
            "sslmode" => sslmode = Some(decoded()),
            "sslrootcert" => root_cert = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let (mode_for_postgres, check) = match sslmode.as_deref() {
        None | Some("disable") => ("disable", None),
        Some("prefer") => ("prefer", Some(Check::Nothing)),
        Some("require") => ("require", Some(Check::Nothing)),
        Some("verify-ca") => ("require", Some(Check::Chain)),
        Some("verify-full") => ("require", Some(Check::Full)),
        Some(_) => {
            return Err(invalid(
                "database.url: sslmode must be disable, prefer, require, verify-ca or verify-full",
            ));
        }
    };
    let sslmode = format!("sslmode={mode_for_postgres}");
    kept.push(&sslmode);
    let config: tokio_postgres::Config = format!("{base}?{}", kept.join("&"))
        .parse()
        // Its message never quotes the URL, so no password is repeated.
        .map_err(|e: tokio_postgres::Error| StorageError::Url(format!("database.url: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (check, root_cert) {
        (None | Some(Check::Nothing), _) => Arc::new(AnyCertificate::new(&provider)),
        (Some(check), Some(path)) => {
            let verifier = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(&path)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| StorageError::Url(format!("database.url: sslrootcert {path}: {e}")))?;
            if check == Check::Full {
                verifier
            } else {
                Arc::new(ChainOnly(verifier))
            }
        }
        (Some(_), None) => {
            return Err(invalid(
                "database.url: sslmode=verify-ca and verify-full need sslrootcert=<PEM file of the CA>",
            ));
        }
    };
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::Url(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(DatabaseTarget {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

fn roots(path: &str) -> Result<RootCertStore, StorageError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        StorageError::Url(format!("database.url: sslrootcert {path}: {e}"))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        roots
            .add(cert.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    Ok(roots)
}

/// `require`: the session is encrypted and its handshake signed by the certificate's key, but
/// the certificate itself is not checked, as libpq does for this mode.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check, but a certificate that names another host passes.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> Result<tokio_postgres::config::SslMode, String> {
        target(url)
            .map(|t| t.config.get_ssl_mode())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sslmode_is_mapped_for_tokio_postgres() {
        use tokio_postgres::config::SslMode;
        let base = "postgres://postgres@db:5432/tw";
        assert_eq!(mode(base), Ok(SslMode::Disable), "plain unless asked");
        assert_eq!(
            mode(&format!("{base}?sslmode=require")),
            Ok(SslMode::Require)
        );
        assert_eq!(mode(&format!("{base}?sslmode=prefer")), Ok(SslMode::Prefer));
        let pem = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        assert_eq!(
            mode(&format!("{base}?sslmode=verify-full&sslrootcert={pem}")),
            Ok(SslMode::Require)
        );
        let kept = target(&format!("{base}?application_name=tw&sslmode=require")).expect("valid");
        assert_eq!(
            kept.config.get_application_name(),
            Some("tw"),
            "other options kept"
        );
    }

    #[test]
    fn several_hosts_are_read_as_libpq_reads_them() {
        use tokio_postgres::config::{Host, TargetSessionAttrs};
        let target = target(
            "postgres://tw:secret@db1:5432,db2:5433/tesoro?target_session_attrs=read-write\
             &sslmode=require&connect_timeout=3",
        )
        .expect("valid");
        let config = target.config;
        assert_eq!(
            config.get_hosts(),
            [Host::Tcp("db1".into()), Host::Tcp("db2".into())]
        );
        assert_eq!(config.get_ports(), [5432, 5433]);
        assert_eq!(config.get_dbname(), Some("tesoro"));
        assert_eq!(config.get_password(), Some(&b"secret"[..]));
        assert_eq!(
            config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
    }

    #[test]
    fn bad_tls_settings_are_named() {
        let base = "postgres://postgres@db:5432/tw";
        for (url, named) in [
            (format!("{base}?sslmode=always"), "sslmode must be"),
            (format!("{base}?sslmode=verify-full"), "need sslrootcert"),
            (
                format!("{base}?sslmode=verify-ca&sslrootcert=/nonexistent.pem"),
                "sslrootcert /nonexistent.pem",
            ),
        ] {
            let error = mode(&url).expect_err(&url);
            assert!(error.contains(named), "{url}: {error}");
        }
    }
}
