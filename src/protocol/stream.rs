//! The byte streams under the packet layer: to a client ([`ClientStream`],
//! TLS after the client's SSLRequest) and to a server ([`BackendStream`],
//! TLS after rwproxy's SSLRequest when `server_tls` asks for it), both a
//! [`MaybeTls`]. An enum rather than a generic parameter on the packet
//! layer because the upgrade happens in the middle of a handshake, on the
//! same connection, and because a session holds plain and encrypted server
//! connections side by side.
//!
//! A client on the Unix socket listener (`listen_socket`) is served over a
//! plain [`tokio::net::UnixStream`]: the session code is generic over
//! [`ClientTransport`], so the TCP path keeps its two-variant stream and
//! neither path matches on a third variant per read or write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The crypto provider for every rustls config rwproxy builds: explicit,
/// so nothing depends on which providers the dependency graph enables.
pub fn crypto_provider() -> std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// A connection before or after its TLS upgrade; `T` is the TLS stream.
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A client connection, before or after the TLS upgrade.
pub type ClientStream = MaybeTls<TlsStream<Prefixed>>;

/// What the handshake needs to know about a client's transport beyond
/// reading and writing bytes.
pub trait ClientTransport: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// TLS may be offered to clients on this transport (the greeting's
    /// `CLIENT_SSL` bit, when a certificate is configured).
    const OFFERS_TLS: bool;
    /// The transport protects the login without TLS (a local socket, as
    /// `require_secure_transport` treats it on the servers): `require_tls`
    /// does not refuse it.
    const LOCAL: bool;
    /// The connection is encrypted.
    fn is_tls(&self) -> bool;
    /// Upgrades to TLS; `rest` holds bytes already read past the
    /// SSLRequest. Only called when [`Self::OFFERS_TLS`].
    fn start_tls(
        self,
        rest: bytes::BytesMut,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> impl std::future::Future<Output = Result<Self, TlsUpgradeError>> + Send;
    /// A probe on the client's socket (see [`HangupProbe`]).
    fn hangup_probe(&self) -> Option<HangupProbe>;
}

/// Tells whether a client has hung up, without reading from its
/// connection: the socket's descriptor number, peeked at (`recv` with
/// `MSG_PEEK | MSG_DONTWAIT`). The session uses it while it waits on a
/// server for a long statement (the stream itself is busy relaying): a
/// client that closed its connection (a driver's read timeout, a killed
/// process) gets its statement ended on the server, as the server itself
/// ends the statement of a client that hung up — a `GET_LOCK` wait or an
/// open transaction must not outlive the client. Peeking reads nothing, so
/// bytes a client pipelined stay for the session. A TLS client that sent
/// `close_notify` before closing is seen only once those bytes are read
/// (after the statement).
///
/// The number, not a duplicate descriptor: a duplicate per session doubled
/// rwproxy's descriptors (10,000 idle clients hit a 20,000 limit). The
/// session owns the stream the number belongs to and only peeks while that
/// stream is borrowed for a statement, so the number cannot be reused for
/// another socket meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct HangupProbe(std::os::fd::RawFd);

impl HangupProbe {
    fn new(fd: std::os::fd::BorrowedFd<'_>) -> Option<HangupProbe> {
        use std::os::fd::AsRawFd;
        Some(HangupProbe(fd.as_raw_fd()))
    }

    /// The client closed its end (EOF) or the connection failed. Never
    /// waits.
    pub fn hung_up(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        let mut byte = [0u8; 1];
        match recv(
            self.0,
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => n == 0,
            Err(e) => !matches!(e, nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR),
        }
    }
}

/// Why a client's TLS upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsUpgradeError {
    #[error("TLS requested twice")]
    Twice,
    #[error("TLS is not offered on the Unix socket")]
    NotOffered,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

impl ClientTransport for ClientStream {
    const OFFERS_TLS: bool = true;
    const LOCAL: bool = false;

    fn hangup_probe(&self) -> Option<HangupProbe> {
        use std::os::fd::AsFd;
        match self {
            MaybeTls::Plain(s) => HangupProbe::new(s.as_fd()),
            MaybeTls::Tls(s) => HangupProbe::new(s.get_ref().0.inner.as_fd()),
        }
    }

    fn is_tls(&self) -> bool {
        MaybeTls::is_tls(self)
    }

    async fn start_tls(
        self,
        rest: bytes::BytesMut,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> Result<Self, TlsUpgradeError> {
        let MaybeTls::Plain(tcp) = self else {
            return Err(TlsUpgradeError::Twice);
        };
        let tls = acceptor
            .accept(Prefixed::new(rest, tcp))
            .await
            .map_err(TlsUpgradeError::Handshake)?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }
}

impl ClientTransport for tokio::net::UnixStream {
    const OFFERS_TLS: bool = false;
    const LOCAL: bool = true;

    fn hangup_probe(&self) -> Option<HangupProbe> {
        use std::os::fd::AsFd;
        HangupProbe::new(self.as_fd())
    }

    fn is_tls(&self) -> bool {
        false
    }

    async fn start_tls(
        self,
        _rest: bytes::BytesMut,
        _acceptor: tokio_rustls::TlsAcceptor,
    ) -> Result<Self, TlsUpgradeError> {
        Err(TlsUpgradeError::NotOffered)
    }
}

/// A connection to a backend server, before or after the TLS upgrade.
pub type BackendStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// A TCP stream with bytes already read from it put back in front: a
/// client may send its TLS ClientHello right behind the SSLRequest, in the
/// same segment, so the packet reader can hold the start of the TLS
/// handshake when the upgrade begins (mysql_async does this).
pub struct Prefixed {
    prefix: bytes::BytesMut,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: bytes::BytesMut, inner: TcpStream) -> Prefixed {
        Prefixed { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T> MaybeTls<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl BackendStream {
    /// For an idle connection, on which the server has nothing to say:
    /// whether the server closed it or sent something unasked (the ERR
    /// 1927 of a `KILL`, 4031 of a `wait_timeout`, a TLS alert). One
    /// non-blocking read, no round trip; what it reads is lost, so the
    /// connection must be discarded when this says true.
    pub fn peer_gone(&self) -> bool {
        let tcp = match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
        };
        let mut byte = [0u8; 1];
        !matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0}: no certificate found")]
    NoCertificate(std::path::PathBuf),
    #[error("{path}: {source}")]
    Rustls {
        path: std::path::PathBuf,
        #[source]
        source: tokio_rustls::rustls::Error,
    },
}

/// Loads a certificate chain and private key (PEM files) into a TLS acceptor.
pub fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, PemError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| PemError::Read { path, source }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(read(cert))?
        .collect::<Result<_, _>>()
        .map_err(read(cert))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate(cert.to_path_buf()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
    let rustls = |source| PemError::Rustls {
        path: key.to_path_buf(),
        source,
    };
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(rustls)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}
