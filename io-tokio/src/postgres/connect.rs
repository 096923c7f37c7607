//! Opening one connection to PostgreSQL as the URL says: TCP or a Unix socket, then
//! TLS as `sslmode` asks, the way libpq does.
//!
//! | `sslmode` | asks for TLS | if the server says no | certificate checked |
//! |---|---|---|---|
//! | `disable`, `allow` | no | | |
//! | `prefer` (default) | yes | plain text | only if `sslrootcert` is set (chain) |
//! | `require` | yes | fails | only if `sslrootcert` is set (chain) |
//! | `verify-ca` | yes | fails | chain to `sslrootcert` |
//! | `verify-full` | yes | fails | chain to `sslrootcert`, and the host name |
//!
//! Without `sslrootcert`, `verify-ca` and `verify-full` check against the bundled
//! Mozilla roots (libpq's `sslrootcert=system`; `system` is read the same way). As in
//! libpq, a Unix socket never carries TLS. Unlike libpq, a TLS handshake that fails
//! under `prefer` (a refused certificate) fails the connection rather than retrying
//! in plain text. The `SSLRequest` and the judging of the
//! server's one-byte answer are core's [`PgConnection`]'s (it refuses plain-text bytes
//! after `'S'`, CVE-2021-23222); this module runs the handshake under the bytes, so
//! the [`PgConnection`] that then logs in is created after it and starts with the
//! startup message.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use effectful::Time;
use effectful::postgres::{Event, NONCE_ENTROPY_LEN, PgConfig, PgConnection, TlsMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::url::{Host, PgUrl, SslMode, UrlError};
use crate::tls::{TlsClient, TlsStream, Verify};

/// How a connection asks for TLS.
#[derive(Clone, Debug)]
enum Negotiate {
    /// Never (`disable`, `allow`, and every Unix socket).
    Plain,
    /// Ask; go on in plain text on `'N'` (`prefer`).
    Prefer(TlsClient),
    /// Ask; fail on `'N'` (`require`, `verify-ca`, `verify-full`).
    Require(TlsClient),
}

/// Opens connections to one server as its URL says (cheap to clone; the root
/// certificates are read once, when it is made).
#[derive(Clone, Debug)]
pub struct PgConnector {
    host: Host,
    port: u16,
    connect_timeout: Duration,
    negotiate: Negotiate,
    sslmode: SslMode,
}

/// Why a connection could not be opened (never holding the password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

impl PgConnector {
    /// A connector for `url`: reads `sslrootcert` now, so a missing or unusable file
    /// is refused here, naming the setting.
    pub fn new(url: &PgUrl) -> Result<PgConnector, UrlError> {
        let config = url.config()?;
        let tls = |verify: Verify| {
            let roots = url
                .sslrootcert
                .as_deref()
                .filter(|path| *path != "system")
                .map(Path::new);
            TlsClient::new(verify, roots).map_err(|e| UrlError::new(format!("sslrootcert: {e}")))
        };
        // As libpq: `prefer` and `require` check the chain when given a root file.
        let weak = if url.sslrootcert.is_some() {
            Verify::Chain
        } else {
            Verify::Nothing
        };
        let negotiate = match url.sslmode {
            SslMode::Disable | SslMode::Allow => Negotiate::Plain,
            SslMode::Prefer => Negotiate::Prefer(tls(weak)?),
            SslMode::Require => Negotiate::Require(tls(weak)?),
            SslMode::VerifyCa => Negotiate::Require(tls(Verify::Chain)?),
            SslMode::VerifyFull => Negotiate::Require(tls(Verify::Full)?),
        };
        Ok(PgConnector {
            host: url.host.clone(),
            port: url.port,
            connect_timeout: config.connect_timeout,
            negotiate,
            sslmode: url.sslmode,
        })
    }

    /// Connects and negotiates TLS as the URL asks, all within the connect timeout.
    /// The stream is ready for a [`PgConnection`] whose config asks for no TLS
    /// ([`TlsMode::Disable`], as [`PgUrl::config`] makes it).
    pub async fn connect(&self) -> Result<PgStream, ConnectError> {
        self.within_timeout(async {
            let stream = self.open().await?;
            match (stream, &self.negotiate) {
                (PgStream(Inner::Tcp(tcp)), Negotiate::Prefer(tls)) => {
                    self.start_tls(tcp, tls, false).await
                }
                (PgStream(Inner::Tcp(tcp)), Negotiate::Require(tls)) => {
                    self.start_tls(tcp, tls, true).await
                }
                (stream, _) => Ok(stream),
            }
        })
        .await
    }

    /// A plain connection, for a cancel request (libpq before PostgreSQL 17 sends
    /// those in plain text too; they hold only the backend's key).
    pub(crate) async fn connect_plain(&self) -> Result<PgStream, ConnectError> {
        self.within_timeout(self.open()).await
    }

    async fn within_timeout(
        &self,
        work: impl Future<Output = Result<PgStream, ConnectError>>,
    ) -> Result<PgStream, ConnectError> {
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError(format!(
                    "no connection within the connect timeout ({:?})",
                    self.connect_timeout
                )))
            })
    }

    async fn open(&self) -> Result<PgStream, ConnectError> {
        match &self.host {
            Host::Tcp(host) => {
                let stream = TcpStream::connect((host.as_str(), self.port))
                    .await
                    .map_err(|e| ConnectError(format!("{host}:{}: {e}", self.port)))?;
                let _ = stream.set_nodelay(true);
                Ok(PgStream(Inner::Tcp(stream)))
            }
            #[cfg(unix)]
            Host::Unix(dir) => {
                let path = format!("{dir}/.s.PGSQL.{}", self.port);
                let stream = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| ConnectError(format!("{path}: {e}")))?;
                Ok(PgStream(Inner::Unix(stream)))
            }
            #[cfg(not(unix))]
            Host::Unix(dir) => Err(ConnectError(format!(
                "Unix sockets ({dir}) need a Unix system"
            ))),
        }
    }

    /// The `SSLRequest`, then the TLS handshake on `'S'`; on `'N'`, plain text unless
    /// `required`.
    async fn start_tls(
        &self,
        mut tcp: TcpStream,
        tls: &TlsClient,
        required: bool,
    ) -> Result<PgStream, ConnectError> {
        let Host::Tcp(host) = &self.host else {
            return Err(ConnectError("TLS needs a TCP host".into()));
        };
        if !ssl_request(&mut tcp).await? {
            if required {
                return Err(ConnectError(format!(
                    "the server at {host}:{} does not accept TLS (it answered 'N' to the SSLRequest), and sslmode={} requires it; turn ssl on in the server or use sslmode=prefer",
                    self.port,
                    self.sslmode.as_str()
                )));
            }
            return Ok(PgStream(Inner::Tcp(tcp)));
        }
        let stream = tls
            .connect(host, tcp)
            .await
            .map_err(|e| ConnectError(format!("sslmode={}: {e}", self.sslmode.as_str())))?;
        Ok(PgStream(Inner::Tls(Box::new(stream))))
    }
}

/// Sends core's `SSLRequest` and lets core judge the answer: `true` on `'S'`,
/// `false` on `'N'`, an error on anything else (or on bytes after the `'S'`).
async fn ssl_request(tcp: &mut TcpStream) -> Result<bool, ConnectError> {
    let io_error = |e: io::Error| ConnectError(format!("the SSLRequest failed: {e}"));
    // Only negotiates: it never logs in, so it needs no user and no entropy.
    let mut probe = PgConnection::new(
        PgConfig::new("").tls(TlsMode::Prefer),
        [0; NONCE_ENTROPY_LEN],
        Time::ZERO,
    );
    while let Some(bytes) = probe.poll_transmit() {
        tcp.write_all(&bytes).await.map_err(io_error)?;
    }
    // A server answers one byte and then waits for the client; more is refused.
    let mut answer = [0u8; 64];
    let n = tcp.read(&mut answer).await.map_err(io_error)?;
    if n == 0 {
        return Err(ConnectError(
            "the server closed the connection after the SSLRequest".into(),
        ));
    }
    probe.handle_input(Time::ZERO, &answer[..n]);
    match probe.poll_event() {
        Some(Event::StartTls) => Ok(true),
        Some(Event::Closed(e)) => Err(ConnectError(e.to_string())),
        // 'N': the probe went on to its startup message, which is never sent.
        _ => Ok(false),
    }
}

/// A connected socket, with TLS under it when negotiated.
#[derive(Debug)]
pub struct PgStream(Inner);

#[derive(Debug)]
enum Inner {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl PgStream {
    /// Whether the bytes travel under TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }
}

/// Calls `$method` on whichever stream is inside.
macro_rules! each_stream {
    ($self:ident, $s:ident => $call:expr) => {
        match &mut $self.get_mut().0 {
            Inner::Tcp($s) => $call,
            #[cfg(unix)]
            Inner::Unix($s) => $call,
            Inner::Tls($s) => $call,
        }
    };
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
