//! The load's WebSocket client: `ws://` only, text frames out (masked), every frame
//! in, nothing more than the load needs.
//!
//! Why not tungstenite: the load generator shares the machine with the server it
//! measures, and at 100,000 deliveries a second tungstenite's per-frame work (its
//! codec's buffers, a split stream's lock, a task per direction) cost the generator
//! about 3 µs of CPU per delivery, CPU the server then lacks. Here a delivery is
//! one `read` into a buffer kept between reads and a header parsed in place.
//!
//! Frames from the server are checked as RFC 6455 asks of a client (no mask, no
//! reserved bits, control frames short and whole, lengths within a limit before
//! anything is allocated); a violation is an error that says what was wrong. The
//! handshake needs a `101` with `Upgrade: websocket`; its `Sec-WebSocket-Accept` is
//! not checked (it guards against intermediaries that do not speak WebSocket, and
//! the load talks to the server it names). The
//! masking keys come from a per-client generator seeded by the caller: they keep
//! the bytes on the wire from being the text as typed, as the protocol wants of a
//! client, but make no claim to be unpredictable (this is a load tool).

use std::fmt;
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest frame (or fragmented message) accepted: a `joined` frame carries up
/// to 50 messages of up to 2,000 characters, escaped.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// The longest handshake response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The read buffer's first size: room for a burst of chat frames.
const READ_BUFFER: usize = 4 * 1024;

/// What went wrong, said for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError(pub String);

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for WsError {
    fn from(e: std::io::Error) -> Self {
        WsError(e.to_string())
    }
}

/// Where to connect: `ws://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `HOST:PORT`, to connect to and to send as `Host`.
    pub authority: String,
    pub path: String,
}

impl WsUrl {
    pub fn parse(url: &str) -> Result<WsUrl, String> {
        let rest = match url.split_once("://") {
            Some(("ws", rest)) => rest,
            Some(("wss", _)) => {
                return Err(format!("{url:?}: wss:// is not supported; use ws://"));
            }
            _ => return Err(format!("{url:?} is not a ws:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?}: expected ws://HOST[:PORT]/PATH"));
        }
        // An IPv6 host is bracketed: its colons are not the port's.
        let host_end = match authority.starts_with('[') {
            true => authority.find(']').map_or(authority.len(), |at| at + 1),
            false => authority.find(':').unwrap_or(authority.len()),
        };
        let authority = match authority[host_end..].strip_prefix(':') {
            Some(port) => {
                port.parse::<u16>()
                    .map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
                authority.to_owned()
            }
            None if host_end == authority.len() => format!("{authority}:80"),
            None => return Err(format!("{url:?}: expected ws://HOST[:PORT]/PATH")),
        };
        Ok(WsUrl {
            authority,
            path: path.to_owned(),
        })
    }
}

/// A frame's header, parsed where it lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    /// The payload, as positions in the bytes given to [`parse_header`].
    pub payload: Range<usize>,
}

/// The frame at the start of `bytes`: `Ok(None)` while it is incomplete (then the
/// bytes it needs in all, when the header says), an error if the server broke the
/// protocol. Nothing is allocated: the lengths are checked first.
pub fn parse_header(bytes: &[u8]) -> Result<Result<Header, Option<usize>>, WsError> {
    let [b0, b1, ..] = *bytes else {
        return Ok(Err(None));
    };
    if b0 & 0x70 != 0 {
        return Err(WsError(format!(
            "a frame with reserved bits set (first byte {b0:#04x}): no extension was agreed"
        )));
    }
    if b1 & 0x80 != 0 {
        return Err(WsError("a masked frame from the server".to_owned()));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (start, len) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(Err(None)),
        },
        127 => match bytes.get(2..10) {
            Some(eight) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(eight);
                (10, u64::from_be_bytes(be))
            }
            None => return Ok(Err(None)),
        },
        short => (2, u64::from(short)),
    };
    if opcode >= 8 && (len > 125 || !fin) {
        return Err(WsError(format!(
            "a control frame (opcode {opcode}) {}",
            if fin {
                "longer than 125 bytes"
            } else {
                "fragmented"
            }
        )));
    }
    let len = match usize::try_from(len) {
        Ok(len) if len <= MAX_MESSAGE => len,
        _ => {
            return Err(WsError(format!(
                "a frame of {len} bytes (the most accepted is {MAX_MESSAGE})"
            )));
        }
    };
    let end = start + len;
    if bytes.len() < end {
        return Ok(Err(Some(end)));
    }
    Ok(Ok(Header {
        fin,
        opcode,
        payload: start..end,
    }))
}

/// A whole message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Text(&'a str),
    /// A binary message: the chat never sends one.
    Binary,
    /// The server closed, with its code if it gave one.
    Close(Option<u16>),
}

/// One client's connection.
pub struct WsClient {
    stream: TcpStream,
    /// Bytes read: `buf[start..end]` not yet taken.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message so far, and whether it is text.
    partial: Option<(Vec<u8>, bool)>,
    /// The last whole message taken from `partial` (so `next` can lend it).
    assembled: Vec<u8>,
    /// Masking keys.
    keys: u64,
    out: Vec<u8>,
}

impl WsClient {
    /// Connects and upgrades; `seed` seeds the handshake key and the masking keys.
    pub async fn connect(url: &WsUrl, seed: u64) -> Result<WsClient, WsError> {
        let stream = TcpStream::connect(url.authority.as_str()).await?;
        // No Nagle, as a browser's socket.
        stream.set_nodelay(true)?;
        let mut client = WsClient {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            partial: None,
            assembled: Vec::new(),
            keys: seed,
            out: Vec::with_capacity(256),
        };
        let mut key = [0u8; 16];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&client.next_key().to_le_bytes()[..chunk.len()]);
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            url.path,
            url.authority,
            base64(&key)
        );
        client.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = find(&client.buf[..client.end], b"\r\n\r\n") {
                break at + 4;
            }
            if client.end >= MAX_RESPONSE_HEAD {
                return Err(WsError(format!(
                    "the handshake response is longer than {MAX_RESPONSE_HEAD} bytes"
                )));
            }
            if client.fill().await? == 0 {
                return Err(WsError("the server closed during the handshake".to_owned()));
            }
        };
        check_response(&client.buf[..head_end])?;
        client.start = head_end;
        Ok(client)
    }

    /// The next masking key (splitmix64).
    fn next_key(&mut self) -> u64 {
        self.keys = self.keys.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.keys;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Moves the bytes not yet taken to the start of the buffer.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
    }

    /// Reads what the socket has, into the buffer (growing it for a frame that
    /// needs more room, up to [`MAX_MESSAGE`]). Cancel-safe: bytes read are kept.
    /// Returns 0 when the server has closed the connection.
    pub async fn fill(&mut self) -> Result<usize, WsError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.compact();
            } else {
                let grown = (self.buf.len() * 2).min(MAX_MESSAGE + 16);
                if grown == self.buf.len() {
                    return Err(WsError("a frame longer than the limit".to_owned()));
                }
                self.buf.resize(grown, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// The next whole message already read, if there is one; answers pings on the
    /// way. `Ok(None)`: call [`fill`](Self::fill) and ask again.
    pub async fn next(&mut self) -> Result<Option<Incoming<'_>>, WsError> {
        loop {
            let header = match parse_header(&self.buf[self.start..self.end])? {
                Ok(header) => header,
                Err(needed) => {
                    // Make room now for a frame longer than the buffer.
                    if let Some(needed) = needed.filter(|n| *n > self.buf.len()) {
                        self.compact();
                        self.buf.resize(needed, 0);
                    }
                    return Ok(None);
                }
            };
            let payload = self.start + header.payload.start..self.start + header.payload.end;
            self.start = payload.end;
            match (header.opcode, header.fin, self.partial.is_some()) {
                (1 | 2, true, false) => {
                    let bytes = &self.buf[payload];
                    return Ok(Some(whole(header.opcode == 1, bytes)?));
                }
                (1 | 2, false, false) => {
                    self.partial = Some((self.buf[payload].to_vec(), header.opcode == 1));
                }
                (0, fin, true) => {
                    let (so_far, text) = self.partial.as_mut().expect("partial is some");
                    if so_far.len() + payload.len() > MAX_MESSAGE {
                        return Err(WsError(format!(
                            "a fragmented message longer than {MAX_MESSAGE} bytes"
                        )));
                    }
                    so_far.extend_from_slice(&self.buf[payload]);
                    if fin {
                        let text = *text;
                        let (message, _) = self.partial.take().expect("partial is some");
                        self.assembled = message;
                        return Ok(Some(whole(text, &self.assembled)?));
                    }
                }
                (8, _, _) => {
                    let code = self.buf[payload]
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]]));
                    return Ok(Some(Incoming::Close(code)));
                }
                (9, _, _) => {
                    let ping = self.buf[payload].to_vec();
                    self.send(10, &ping).await?;
                }
                (10, _, _) => {}
                (opcode, _, partial) => {
                    return Err(WsError(format!(
                        "an unexpected frame: opcode {opcode}{}",
                        if partial {
                            " inside a fragmented message"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
    }

    /// Sends one text message, in one frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.send(1, text.as_bytes()).await
    }

    /// Sends a close frame without a code.
    pub async fn close(&mut self) -> Result<(), WsError> {
        self.send(8, &[]).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        let key = (self.next_key() as u32).to_be_bytes();
        self.out.clear();
        push_header(&mut self.out, FIN | opcode, MASKED, payload.len());
        self.out.extend_from_slice(&key);
        let masked = payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k);
        self.out.extend(masked);
        Ok(self.stream.write_all(&self.out).await?)
    }
}

/// A frame header's first byte's final-fragment bit, and its second byte's mask bit.
const FIN: u8 = 0x80;
const MASKED: u8 = 0x80;

/// A frame header (RFC 6455 section 5.2) with the shortest length encoding: `first`
/// holds the final-fragment bit and the opcode, `mask` is [`MASKED`] or 0.
fn push_header(out: &mut Vec<u8>, first: u8, mask: u8, len: usize) {
    out.push(first);
    match len {
        0..=125 => out.push(mask | len as u8),
        126..=0xffff => {
            out.push(mask | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

fn whole(text: bool, bytes: &[u8]) -> Result<Incoming<'_>, WsError> {
    if !text {
        return Ok(Incoming::Binary);
    }
    std::str::from_utf8(bytes)
        .map(Incoming::Text)
        .map_err(|e| WsError(format!("a text message that is not UTF-8: {e}")))
}

/// A `101 Switching Protocols` that upgraded to `websocket`, or why not.
fn check_response(head: &[u8]) -> Result<(), WsError> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(WsError(format!(
            "the server did not upgrade: {:?}",
            status.chars().take(100).collect::<String>()
        )));
    }
    let upgraded = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.trim().eq_ignore_ascii_case("websocket")
        })
    });
    if !upgraded {
        return Err(WsError(
            "the 101 response has no \"Upgrade: websocket\"".to_owned(),
        ));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's frame: unmasked.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_header(
            &mut out,
            if fin { FIN } else { 0 } | opcode,
            0,
            payload.len(),
        );
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_frame_split_anywhere_is_incomplete_until_its_last_byte() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let payload = vec![b'x'; len];
            let bytes = frame(true, 1, &payload);
            for cut in 0..bytes.len().min(300) {
                let got = parse_header(&bytes[..cut]).expect("valid so far");
                assert!(got.is_err(), "len {len}, cut {cut}: parsed too early");
                if let Err(Some(needed)) = got {
                    assert_eq!(needed, bytes.len(), "len {len}, cut {cut}");
                }
            }
            let header = parse_header(&bytes).expect("valid").expect("whole");
            assert_eq!((header.fin, header.opcode), (true, 1));
            assert_eq!(&bytes[header.payload], &payload[..]);
        }
    }

    #[test]
    fn protocol_violations_are_refused_saying_what_was_wrong() {
        let cases: [(Vec<u8>, &str); 5] = [
            (vec![0x81 | 0x40, 0], "reserved bits"),
            (vec![0x81, 0x80, 1, 2, 3, 4], "masked"),
            (frame(true, 9, &[0; 126]), "longer than 125"),
            (frame(false, 9, b"hi"), "fragmented"),
            (
                [&[0x81u8, 127][..], &(1u64 << 40).to_be_bytes()].concat(),
                "the most accepted",
            ),
        ];
        for (bytes, says) in cases {
            let error = parse_header(&bytes).expect_err("refused");
            assert!(error.0.contains(says), "{error} should say {says:?}");
        }
    }

    #[test]
    fn urls_take_ws_only_with_a_port_by_default() {
        let url = WsUrl::parse("ws://127.0.0.1:8000/ws/chat").expect("valid");
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("127.0.0.1:8000", "/ws/chat")
        );
        let url = WsUrl::parse("ws://localhost").expect("valid");
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("localhost:80", "/")
        );
        let url = WsUrl::parse("ws://[::1]:9000/x").expect("valid");
        assert_eq!(url.authority, "[::1]:9000");
        assert!(
            WsUrl::parse("wss://h/x")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            WsUrl::parse("http://h/x")
                .unwrap_err()
                .contains("not a ws://")
        );
        assert!(
            WsUrl::parse("ws://h:port/x")
                .unwrap_err()
                .contains("not a port")
        );
    }

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 16]).len(), 24);
    }

    /// Unmasks a client frame, checking it is masked and whole.
    fn unmask(bytes: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(bytes[1] & 0x80, 0x80, "client frames are masked");
        let len = usize::from(bytes[1] & 0x7f);
        assert!(len <= 125, "short frames in this test");
        let key = &bytes[2..6];
        let payload = bytes[6..6 + len]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        (bytes[0] & 0x0f, payload)
    }

    #[tokio::test]
    async fn a_server_s_pings_fragments_and_long_frames_come_through() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = WsUrl::parse(&format!("ws://{}/ws/chat", listener.local_addr().unwrap()))
            .expect("a URL");
        let long = "y".repeat(3 * READ_BUFFER);
        let server = {
            let long = long.clone();
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.expect("a client");
                let mut request = Vec::new();
                while find(&request, b"\r\n\r\n").is_none() {
                    let mut byte = [0u8; 1];
                    socket.read_exact(&mut byte).await.expect("the request");
                    request.push(byte[0]);
                }
                let request = String::from_utf8(request).expect("text");
                assert!(
                    request.starts_with("GET /ws/chat HTTP/1.1\r\n"),
                    "{request}"
                );
                assert!(request.contains("Sec-WebSocket-Key: "), "{request}");
                let mut out =
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
                out.extend(frame(true, 9, b"are you there"));
                out.extend(frame(false, 1, b"hel"));
                out.extend(frame(true, 0, b"lo"));
                out.extend(frame(true, 1, long.as_bytes()));
                // Written a byte at a time: every split of the bytes is met.
                for byte in out {
                    socket.write_all(&[byte]).await.expect("written");
                }
                let mut pong = [0u8; 6 + 13];
                socket.read_exact(&mut pong).await.expect("the pong");
                assert_eq!(unmask(&pong), (10, b"are you there".to_vec()));
                let mut text = [0u8; 6 + 2];
                socket.read_exact(&mut text).await.expect("a text");
                assert_eq!(unmask(&text), (1, b"hi".to_vec()));
                socket
                    .write_all(&frame(true, 8, &1001u16.to_be_bytes()))
                    .await
                    .expect("close");
            })
        };
        let mut client = WsClient::connect(&url, 7).await.expect("connected");
        let mut got = Vec::new();
        loop {
            match client.next().await.expect("valid frames") {
                Some(Incoming::Text(text)) => {
                    got.push(text.to_owned());
                    if got.len() == 2 {
                        client.send_text("hi").await.expect("sent");
                    }
                }
                Some(Incoming::Close(code)) => {
                    assert_eq!(code, Some(1001));
                    break;
                }
                Some(Incoming::Binary) => panic!("no binary frame was sent"),
                None => assert!(client.fill().await.expect("read") > 0, "closed early"),
            }
        }
        assert_eq!(got, ["hello".to_owned(), long]);
        server.await.expect("the server's checks");
    }

    #[test]
    fn the_handshake_response_must_upgrade() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
        assert_eq!(check_response(ok), Ok(()));
        let refused = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert!(check_response(refused).unwrap_err().0.contains("404"));
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        assert!(
            check_response(no_upgrade)
                .unwrap_err()
                .0
                .contains("Upgrade")
        );
    }
}
