//! The server side of the opening handshake (RFC 6455 section 4.2), from raw bytes or
//! from a request an HTTP server already parsed.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the client's key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The most headers a raw upgrade request may carry.
const MAX_HEADERS: usize = 64;

/// Decides whether a request's `Origin` header (`None` when absent) may open a
/// WebSocket. Browsers always send one; other clients often do not.
pub type OriginCheck = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// The server's side of the opening handshake: the subprotocols it speaks and who may
/// connect. Cheap to clone and `Send + Sync`, so one can serve every connection.
///
/// ```
/// use effectful::websocket::{Acceptor, UpgradeRequest};
///
/// let acceptor = Acceptor::new()
///     .subprotocols(["chat.v2", "chat.v1"])
///     .origin_check(|origin| origin == Some("https://example.com"));
/// let request = UpgradeRequest {
///     method: "GET",
///     http_1_1_or_later: true,
///     headers: &[
///         ("Upgrade", b"websocket"),
///         ("Connection", b"keep-alive, Upgrade"),
///         ("Sec-WebSocket-Version", b"13"),
///         ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
///         ("Sec-WebSocket-Protocol", b"chat.v1, chat.v2"),
///         ("Origin", b"https://example.com"),
///     ],
/// };
/// let accepted = acceptor.accept(&request).unwrap();
/// assert_eq!(accepted.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// assert_eq!(accepted.subprotocol.as_deref(), Some("chat.v2"));
/// ```
#[derive(Clone, Default)]
pub struct Acceptor {
    subprotocols: Vec<String>,
    origin: Option<OriginCheck>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("subprotocols", &self.subprotocols)
            .field("origin_check", &self.origin.is_some())
            .finish()
    }
}

/// An upgrade request an HTTP server already parsed (axum, hyper): its method, whether
/// it is HTTP/1.1 or later, and its headers as name and raw value.
#[derive(Clone, Copy, Debug)]
pub struct UpgradeRequest<'a> {
    /// The request method; only `GET` may upgrade.
    pub method: &'a str,
    /// Whether the request is HTTP/1.1 or later (RFC 6455 requires it).
    pub http_1_1_or_later: bool,
    /// Every header, in order; names are matched without regard to case.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// A handshake the server accepted: what the `101 Switching Protocols` response says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// The subprotocol chosen: the server's most preferred one that the client
    /// offered, or `None` when they share none (the connection still opens).
    pub subprotocol: Option<String>,
}

impl Accepted {
    /// The whole `101 Switching Protocols` response, for a server writing raw bytes.
    pub fn response_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            self.accept_key
        );
        if let Some(protocol) = &self.subprotocol {
            out.push_str("Sec-WebSocket-Protocol: ");
            out.push_str(protocol);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Why the server refused an upgrade request. [`status`](Self::status) and
/// [`response_bytes`](Self::response_bytes) give the HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not an HTTP request.
    #[error("the upgrade request is not valid HTTP ({0}); send an HTTP/1.1 GET request")]
    Malformed(String),
    /// The request is larger than `WsConfig::max_request_bytes` or has too many headers.
    #[error(
        "the upgrade request is larger than the limit of {limit} bytes or {MAX_HEADERS} headers"
    )]
    TooLarge {
        /// The configured byte limit.
        limit: usize,
    },
    /// Not a `GET`.
    #[error("a WebSocket upgrade must use GET, not {0}")]
    WrongMethod(String),
    /// HTTP/1.0.
    #[error("a WebSocket upgrade needs HTTP/1.1 or later")]
    WrongHttpVersion,
    /// No `Upgrade: websocket` or no `Connection: upgrade`.
    #[error("the request lacks `Upgrade: websocket` and `Connection: Upgrade` headers")]
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported Sec-WebSocket-Version {0:?}; this server speaks version 13")]
    WrongVersion(String),
    /// `Sec-WebSocket-Key` is missing or not 16 bytes in base64.
    #[error("Sec-WebSocket-Key is missing or not 16 bytes of base64")]
    BadKey,
    /// The origin check refused the request's `Origin`.
    #[error("origin {0:?} may not open a WebSocket here")]
    OriginRefused(Option<String>),
    /// The client sent nothing complete within the idle timeout.
    #[error("the client did not finish its upgrade request in time")]
    Timeout,
}

impl HandshakeError {
    /// The HTTP status the refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooLarge { .. } => 431,
            HandshakeError::WrongMethod(_) => 405,
            HandshakeError::WrongVersion(_) => 426,
            HandshakeError::OriginRefused(_) => 403,
            HandshakeError::Timeout => 408,
            HandshakeError::Malformed(_)
            | HandshakeError::WrongHttpVersion
            | HandshakeError::NotAnUpgrade
            | HandshakeError::BadKey => 400,
        }
    }

    /// The whole HTTP response refusing the upgrade; a wrong version also names the one
    /// the server speaks (`Sec-WebSocket-Version: 13`), as RFC 6455 asks.
    pub fn response_bytes(&self) -> Vec<u8> {
        let status = self.status();
        let phrase = match status {
            403 => "Forbidden",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let body = self.to_string();
        let mut out = format!("HTTP/1.1 {status} {phrase}\r\n");
        if status == 426 {
            out.push_str("Sec-WebSocket-Version: 13\r\n");
        }
        if status == 405 {
            out.push_str("Allow: GET\r\n");
        }
        out.push_str(&format!(
            "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        out.into_bytes()
    }
}

impl Acceptor {
    /// An acceptor with no subprotocols that admits every origin.
    pub fn new() -> Acceptor {
        Acceptor::default()
    }

    /// The subprotocols the server speaks, most preferred first.
    pub fn subprotocols<I, S>(mut self, protocols: I) -> Acceptor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Admit only requests whose `Origin` (`None` when absent) passes `check`.
    pub fn origin_check(
        mut self,
        check: impl Fn(Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Acceptor {
        self.origin = Some(Arc::new(check));
        self
    }

    /// Checks a request an HTTP server already parsed and, if it may upgrade, says what
    /// the `101` response carries.
    pub fn accept(&self, request: &UpgradeRequest<'_>) -> Result<Accepted, HandshakeError> {
        if !request.method.eq_ignore_ascii_case("GET") {
            return Err(HandshakeError::WrongMethod(request.method.to_owned()));
        }
        if !request.http_1_1_or_later {
            return Err(HandshakeError::WrongHttpVersion);
        }
        let values = |name: &'static str| header_values(request.headers, name);
        let has_token = |name: &'static str, token: &str| {
            values(name).any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
        };
        if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
            return Err(HandshakeError::NotAnUpgrade);
        }
        let version = values("Sec-WebSocket-Version").next().unwrap_or(b"");
        if version.trim_ascii() != b"13" {
            return Err(HandshakeError::WrongVersion(
                String::from_utf8_lossy(version).into_owned(),
            ));
        }
        let key = values("Sec-WebSocket-Key")
            .next()
            .map(<[u8]>::trim_ascii)
            .ok_or(HandshakeError::BadKey)?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => return Err(HandshakeError::BadKey),
        }
        if let Some(check) = &self.origin {
            let origin = values("Origin")
                .next()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if !check(origin.as_deref()) {
                return Err(HandshakeError::OriginRefused(origin));
            }
        }
        let offered: Vec<&[u8]> = values("Sec-WebSocket-Protocol").flat_map(tokens).collect();
        let subprotocol = self
            .subprotocols
            .iter()
            .find(|ours| offered.contains(&ours.as_bytes()))
            .cloned();
        Ok(Accepted {
            accept_key: accept_key(key),
            subprotocol,
        })
    }

    /// Parses an upgrade request from the start of `bytes`. `Ok(None)` means the
    /// request is not complete yet (and within `max_request_bytes`); `Ok(Some)` gives
    /// the acceptance and how many bytes the request took (what follows are already
    /// WebSocket frames).
    pub fn accept_bytes(
        &self,
        bytes: &[u8],
        max_request_bytes: usize,
    ) -> Result<Option<(Accepted, usize)>, HandshakeError> {
        let too_large = HandshakeError::TooLarge {
            limit: max_request_bytes,
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let consumed = match parsed.parse(bytes) {
            Ok(httparse::Status::Complete(n)) if n <= max_request_bytes => n,
            Ok(httparse::Status::Partial) if bytes.len() <= max_request_bytes => return Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(too_large),
            Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
        };
        let pairs: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
        let request = UpgradeRequest {
            method: parsed.method.unwrap_or(""),
            http_1_1_or_later: parsed.version.unwrap_or(0) >= 1,
            headers: &pairs,
        };
        self.accept(&request).map(|a| Some((a, consumed)))
    }
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
///
/// ```
/// assert_eq!(
///     effectful::websocket::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
/// );
/// ```
pub fn accept_key(client_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Every value of the header `name`, in order.
fn header_values<'a>(
    headers: &'a [(&'a str, &'a [u8])],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}
