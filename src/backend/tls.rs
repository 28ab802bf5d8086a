//! TLS from rwproxy to the servers (`server_tls`, `server_tls_ca`,
//! `[[servers]] tls`), for both kinds of connection rwproxy opens:
//!
//! - the data path ([`super::BackendConn`]): rustls configs built here once
//!   per configuration load ([`ServerTls::from_config`]), one per mode,
//!   shared by every connection;
//! - the monitor, promotion and account connections (mysql_async):
//!   [`ssl_opts`] maps the same modes onto mysql_async's `SslOpts`, and
//!   [`connect_mysql`] works around mysql_async 0.37's `verify_ca`
//!   (see there).
//!
//! The modes: `required` encrypts without checking who answers (handshake
//! signatures are still verified, so the session key is bound to the
//! certificate presented); `verify_ca` checks the chain against the CA but
//! not the name; `verify_identity` checks chain and name against the
//! server's configured `host`.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{Config, ConfigError, ServerCompression, ServerTlsMode, invalid};
use crate::protocol::compress::Algorithm;
use crate::protocol::stream::{PemError, crypto_provider};

/// What one server's connections use: the shared rustls config of its mode
/// and the name its certificate is checked against.
#[derive(Clone)]
pub struct ServerTlsConfig {
    pub mode: ServerTlsMode,
    connector: TlsConnector,
    /// The configured host as a TLS name (also sent as SNI when a DNS name).
    name: ServerName<'static>,
}

impl std::fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTlsConfig")
            .field("mode", &self.mode)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerTlsConfig {
    /// Runs the TLS handshake on a connection whose SSLRequest was sent.
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// Per-server TLS settings of one configuration load.
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    /// By server name; absent = plaintext.
    by_server: HashMap<String, ServerTlsConfig>,
    /// Protocol compression by server name; absent = uncompressed. Kept
    /// here because, like TLS, it shapes the link to each server and is
    /// swapped by RELOAD with it.
    compression: HashMap<String, Algorithm>,
}

impl ServerTls {
    /// Builds the rustls configs the configuration asks for: the CA file is
    /// read and checked here, so a bad one fails the load (start-up or
    /// RELOAD) naming `server_tls_ca`, never a connection later.
    pub fn from_config(config: &Config) -> Result<ServerTls, ConfigError> {
        let needs_ca = config.servers.iter().any(|s| config.tls_for(s).verifies());
        let roots = match (&config.server_tls_ca, needs_ca) {
            (Some(path), true) => Some(Arc::new(
                load_roots(path).map_err(|e| invalid("server_tls_ca", e.to_string()))?,
            )),
            _ => None,
        };
        let provider = crypto_provider();
        let mut per_mode: HashMap<ServerTlsMode, TlsConnector> = HashMap::new();
        let mut by_server = HashMap::new();
        for (i, s) in config.servers.iter().enumerate() {
            let mode = config.tls_for(s);
            if !mode.enabled() {
                continue;
            }
            let connector = match per_mode.get(&mode) {
                Some(c) => c.clone(),
                None => {
                    let c =
                        TlsConnector::from(client_config(mode, roots.clone(), provider.clone())?);
                    per_mode.insert(mode, c.clone());
                    c
                }
            };
            let name = match ServerName::try_from(s.host.clone()) {
                Ok(n) => n,
                Err(e) if mode == ServerTlsMode::VerifyIdentity => {
                    return Err(invalid(
                        format!("servers[{i}].host"),
                        format!(
                            "{:?} cannot be checked against a certificate ({e}); use verify_ca",
                            s.host
                        ),
                    ));
                }
                // The name is not checked in these modes; it only goes out
                // as SNI, where a placeholder does no harm.
                Err(_) => ServerName::try_from("rwproxy.invalid")
                    .map_err(|e| invalid(format!("servers[{i}].host"), e.to_string()))?,
            };
            by_server.insert(
                s.name.clone(),
                ServerTlsConfig {
                    mode,
                    connector,
                    name,
                },
            );
        }
        let compression = config
            .servers
            .iter()
            .filter_map(|s| {
                let algo = match s.compression {
                    ServerCompression::Off => return None,
                    ServerCompression::Zlib => Algorithm::Zlib,
                    ServerCompression::Zstd => Algorithm::Zstd {
                        level: s.compression_level,
                    },
                };
                Some((s.name.clone(), algo))
            })
            .collect();
        Ok(ServerTls {
            by_server,
            compression,
        })
    }

    /// The TLS settings for server `name`; `None` means plaintext.
    pub fn for_server(&self, name: &str) -> Option<&ServerTlsConfig> {
        self.by_server.get(name)
    }

    /// The compression to negotiate with server `name`.
    pub fn compression_for(&self, name: &str) -> Option<Algorithm> {
        self.compression.get(name).copied()
    }
}

/// Reads the CA certificates from a PEM file.
fn load_roots(path: &std::path::Path) -> Result<RootCertStore, PemError> {
    let read = |source| PemError::Read {
        path: path.to_path_buf(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate(path.to_path_buf()));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|source| PemError::Rustls {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

fn client_config(
    mode: ServerTlsMode,
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("server_tls", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        ServerTlsMode::Disabled | ServerTlsMode::Required => Arc::new(AnyCertificate { provider }),
        ServerTlsMode::VerifyCa | ServerTlsMode::VerifyIdentity => {
            let roots =
                roots.ok_or_else(|| invalid("server_tls_ca", "is required for this mode"))?;
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| invalid("server_tls_ca", e.to_string()))?;
            if mode == ServerTlsMode::VerifyCa {
                Arc::new(ChainOnly { webpki })
            } else {
                webpki
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `required`: any certificate is accepted, but the handshake signatures
/// are verified (the peer must hold the key of the certificate it shows).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify_ca`: the full WebPKI check, except that a name mismatch is
/// forgiven. rustls checks the chain (and validity dates, key usage) before
/// the name, so a name error means everything else already passed.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

/// Whether `e` is "certificate valid, but not for this name" (matched on
/// the variant: the text changed across rustls releases).
fn is_name_mismatch(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(e) if is_name_mismatch(&e) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// mysql_async's TLS options for a server in `mode` (`None`: plaintext).
///
/// - `required`: encrypt, accept any certificate (mysql_async still checks
///   the handshake signatures).
/// - `verify_ca`: only the configured CA (no built-in web roots), name not
///   checked.
/// - `verify_identity`: only the configured CA, name checked against the
///   host mysql_async connects to (the configured `host`).
pub fn ssl_opts(config: &Config, mode: ServerTlsMode) -> Option<mysql_async::SslOpts> {
    if !mode.enabled() {
        return None;
    }
    let mut opts = mysql_async::SslOpts::default();
    if mode.verifies()
        && let Some(ca) = &config.server_tls_ca
    {
        opts = opts
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    Some(match mode {
        ServerTlsMode::Required => opts.with_danger_accept_invalid_certs(true),
        ServerTlsMode::VerifyCa => opts.with_danger_skip_domain_validation(true),
        _ => opts,
    })
}

/// Opens a mysql_async connection, making `verify_ca` work.
///
/// mysql_async 0.37.1 implements `skip_domain_validation` by looking for
/// the text "NotValidForName" in the rustls error, which rustls 0.23 no
/// longer prints (mysql_async issue #404, fixed upstream after 0.37.1): a
/// name mismatch is refused even in `verify_ca`. rustls reports a name
/// mismatch only after the chain verified, and the error lists the names
/// the certificate holds; so on that error, in `verify_ca` only, connect
/// again checking the certificate against one of its own names. The second
/// connection still verifies the chain against the CA.
pub async fn connect_mysql(
    opts: mysql_async::Opts,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let skip_name = opts
        .ssl_opts()
        .is_some_and(|s| s.skip_domain_validation() && !s.accept_invalid_certs());
    match mysql_async::Conn::new(opts.clone()).await {
        Err(e) if skip_name => {
            let Some(name) = presented_name(&e) else {
                return Err(e);
            };
            let ssl = opts
                .ssl_opts()
                .cloned()
                .map(|s| s.with_danger_tls_hostname_override(Some(name)));
            mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).ssl_opts(ssl)).await
        }
        other => other,
    }
}

/// The first name a certificate holds, from a rustls name-mismatch error
/// somewhere in `e`'s chain.
fn presented_name(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let rustls_err = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        })) = rustls_err
        {
            return presented.iter().find_map(|p| parse_presented(p));
        }
        next = err.source();
    }
    None
}

/// webpki renders presented names as `DnsName("db.example")` or
/// `IpAddress(10.0.0.1)`.
fn parse_presented(p: &str) -> Option<String> {
    if let Some(rest) = p.strip_prefix("DnsName(\"") {
        return rest.strip_suffix("\")").map(str::to_string);
    }
    if let Some(rest) = p.strip_prefix("IpAddress(") {
        return rest
            .strip_suffix(')')
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .map(str::to_string);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_are_parsed() {
        assert_eq!(
            parse_presented("DnsName(\"db.example\")").as_deref(),
            Some("db.example")
        );
        assert_eq!(
            parse_presented("IpAddress(10.0.0.1)").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(parse_presented("DirectoryName"), None);
        assert_eq!(parse_presented("IpAddress(junk)"), None);
    }

    #[test]
    fn name_mismatch_is_found_inside_io_errors() {
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").expect("name"),
            presented: vec!["DnsName(\"db.example\")".into()],
        });
        assert!(is_name_mismatch(&e));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(presented_name(&io).as_deref(), Some("db.example"));
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(presented_name(&other), None);
    }
}
