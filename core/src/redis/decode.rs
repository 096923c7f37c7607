//! `FrameDecoder`: the scanner finds a whole frame within the limits, then
//! `redis-protocol` decodes it, once, and we copy it out as a [`Value`].

use redis_protocol::resp2::types::RangeFrame as Range2;
use redis_protocol::resp3::types::{RangeFrame as Range3, VerbatimStringFormat};

use super::error::{ProtocolError, ServerError};
use super::limits::Limits;
use super::scan::{Scanner, Syntax};
use super::value::Value;

/// Reads RESP2 and RESP3 frames from the front of a buffer, within [`Limits`].
///
/// Call [`FrameDecoder::decode`] with the bytes received so far, starting at the first
/// byte of a frame. When it answers `Ok(None)` the frame is incomplete: call it again
/// with the same bytes and more after them; it resumes where it stopped rather than
/// reading the frame again from its start. After an error the stream cannot be
/// resynchronised: drop the decoder and the connection.
///
/// ```
/// use effectful::redis::{FrameDecoder, Limits, Value};
///
/// let mut decoder = FrameDecoder::new(Limits::default());
/// let bytes = b"*2\r\n$3\r\nfoo\r\n:42\r\n+OK\r\n";
/// assert_eq!(decoder.decode(&bytes[..9]).unwrap(), None);
/// let (value, used) = decoder.decode(bytes).unwrap().unwrap();
/// assert_eq!(value, Value::Array(vec![Value::Bulk(b"foo".to_vec()), Value::Int(42)]));
/// assert_eq!(&bytes[used..], b"+OK\r\n");
/// ```
#[derive(Clone, Debug, Default)]
pub struct FrameDecoder {
    limits: Limits,
    scanner: Scanner,
}

impl FrameDecoder {
    /// A decoder that enforces `limits`.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder {
            limits,
            scanner: Scanner::default(),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes the frame at the start of `buf`: `Ok(Some((value, bytes used)))`, or
    /// `Ok(None)` while it is incomplete.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        if let Some((data, len)) = whole_bulk(buf, &self.limits) {
            // A GET's reply, whole and within the limits: read without the scanner,
            // whose state (if an earlier call left it inside this frame) is done with.
            self.scanner.reset();
            return Ok(Some((Value::Bulk(data.to_vec()), len)));
        }
        self.decode_scanned(buf)
    }

    /// [`decode`](Self::decode) through the scanner, for any frame.
    fn decode_scanned(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        let Some((len, syntax)) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(None);
        };
        let frame = &buf[..len];
        if let Some((data, _)) = whole_bulk(frame, &self.limits) {
            // One bulk string: no decoder needed.
            return Ok(Some((Value::Bulk(data.to_vec()), len)));
        }
        let value = match syntax {
            Syntax::Resp2 => {
                let (range, used) = redis_protocol::resp2::decode::decode_range(frame)
                    .map_err(|e| ProtocolError::Decode(e.to_string()))?
                    .ok_or(ProtocolError::Decode(INCOMPLETE.to_owned()))?;
                check_used(used, len)?;
                from_resp2(frame, &range)
            }
            Syntax::Resp3 => {
                let (range, used) = redis_protocol::resp3::decode::complete::decode_range(frame)
                    .map_err(|e| ProtocolError::Decode(e.to_string()))?
                    .ok_or(ProtocolError::Decode(INCOMPLETE.to_owned()))?;
                check_used(used, len)?;
                from_resp3(frame, &range)?
            }
        };
        Ok(Some((value, len)))
    }
}

/// The data and length of the frame at the start of `buf` when it is one bulk string
/// with a length (`$3\r\nfoo\r\n`), whole, well formed and within `limits`: what
/// the scanner would accept, checked in one pass. `None` for anything else (another
/// type, an incomplete or malformed frame, a length over a limit), which the scanner
/// then reads, or refuses with its error.
fn whole_bulk<'a>(buf: &'a [u8], limits: &Limits) -> Option<(&'a [u8], usize)> {
    let rest = buf.strip_prefix(b"$")?;
    // The length's digits: one to 19, then CRLF (the scanner's bound on a length).
    let digits = rest
        .iter()
        .take(20)
        .take_while(|d| d.is_ascii_digit())
        .count();
    if !(1..=19).contains(&digits) || rest.get(digits..digits + 2)? != b"\r\n" {
        return None;
    }
    let n = usize::try_from(super::decimal(&rest[..digits])?).ok()?;
    if n > limits.max_bulk_len {
        return None;
    }
    let start = 1 + digits + 2;
    let end = start.checked_add(n)?.checked_add(2)?;
    if end > limits.max_frame_len || buf.get(end - 2..end)? != b"\r\n" {
        return None;
    }
    Some((&buf[start..end - 2], end))
}

const INCOMPLETE: &str = "the decoder found incomplete a frame the scanner found whole";

fn check_used(used: usize, len: usize) -> Result<(), ProtocolError> {
    if used != len {
        return Err(ProtocolError::Decode(format!(
            "the decoder read {used} bytes of a {len}-byte frame"
        )));
    }
    Ok(())
}

fn bytes(buf: &[u8], (start, end): (usize, usize)) -> Vec<u8> {
    buf.get(start..end).unwrap_or_default().to_vec()
}

fn text(buf: &[u8], (start, end): (usize, usize)) -> String {
    String::from_utf8_lossy(buf.get(start..end).unwrap_or_default()).into_owned()
}

// Both builders recurse once per nesting level; the scanner has bounded the depth.

fn from_resp2(buf: &[u8], frame: &Range2) -> Value {
    match frame {
        Range2::SimpleString(r) => Value::Simple(text(buf, *r)),
        Range2::Error(r) => Value::Error(ServerError::parse(&text(buf, *r))),
        Range2::Integer(i) => Value::Int(*i),
        Range2::BulkString(r) => Value::Bulk(bytes(buf, *r)),
        Range2::Array(items) => Value::Array(items.iter().map(|f| from_resp2(buf, f)).collect()),
        Range2::Null => Value::Nil,
    }
}

fn from_resp3(buf: &[u8], frame: &Range3) -> Result<Value, ProtocolError> {
    let all = |items: &mut dyn Iterator<Item = &Range3>| -> Result<Vec<Value>, ProtocolError> {
        items.map(|f| from_resp3(buf, f)).collect()
    };
    Ok(match frame {
        Range3::BlobString { data, .. } => Value::Bulk(bytes(buf, *data)),
        Range3::SimpleString { data, .. } => Value::Simple(text(buf, *data)),
        Range3::BlobError { data, .. } | Range3::SimpleError { data, .. } => {
            Value::Error(ServerError::parse(&text(buf, *data)))
        }
        Range3::Boolean { data, .. } => Value::Bool(*data),
        Range3::Null => Value::Nil,
        Range3::Number { data, .. } => Value::Int(*data),
        Range3::Double { data, .. } => Value::Double(*data),
        Range3::BigNumber { data, .. } => Value::BigNumber(text(buf, *data)),
        Range3::VerbatimString { data, format, .. } => Value::Verbatim {
            format: match format {
                VerbatimStringFormat::Text => "txt",
                VerbatimStringFormat::Markdown => "mkd",
            }
            .to_owned(),
            text: bytes(buf, *data),
        },
        Range3::Array { data, .. } => Value::Array(all(&mut data.iter())?),
        Range3::Set { data, .. } => Value::Set(all(&mut data.iter())?),
        Range3::Push { data, .. } => Value::Push(all(&mut data.iter())?),
        Range3::Map { data, .. } => Value::Map(
            // The decoder builds its map from the last pair to the first.
            data.iter()
                .rev()
                .map(|(k, v)| Ok((from_resp3(buf, k)?, from_resp3(buf, v)?)))
                .collect::<Result<_, ProtocolError>>()?,
        ),
        Range3::Hello { .. } | Range3::ChunkedString(_) => {
            return Err(ProtocolError::Decode(
                "a client-side or streamed frame inside a reply".to_owned(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `redis-protocol` makes of a whole bulk-string frame, without the fast path.
    fn by_the_decoder(frame: &[u8]) -> Value {
        let (range, used) = redis_protocol::resp3::decode::complete::decode_range(frame)
            .expect("decoded")
            .expect("whole");
        assert_eq!(used, frame.len());
        from_resp3(frame, &range).expect("a value")
    }

    /// Every prefix of `stream` given in turn to one decoder (as reads arrive), the
    /// frames it reads, until an error or the end: by `decode`, or by the scanner alone.
    fn read_all(stream: &[u8], limits: Limits, scanned: bool) -> Vec<Result<Value, String>> {
        let mut decoder = FrameDecoder::new(limits);
        let (mut at, mut out) = (0, Vec::new());
        for end in at + 1..=stream.len() {
            loop {
                let read = if scanned {
                    decoder.decode_scanned(&stream[at..end])
                } else {
                    decoder.decode(&stream[at..end])
                };
                match read {
                    Ok(Some((value, used))) => {
                        out.push(Ok(value));
                        at += used;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_bulk_string_read_without_the_scanner_reads_and_fails_as_the_scanner_does() {
        let tight = Limits {
            max_bulk_len: 8,
            max_frame_len: 12,
            ..Limits::default()
        };
        let streams: [&[u8]; 12] = [
            b"$3\r\nfoo\r\n$0\r\n\r\n+OK\r\n$003\r\nbar\r\n",
            b"*2\r\n$3\r\nfoo\r\n$1\r\nx\r\n$1\r\ny\r\n",
            b"$-1\r\n$1\r\nz\r\n",
            b"$3\r\nfooX\n",
            b"$3\rx\r\nfoo\r\n",
            b"$ 3\r\nfoo\r\n",
            b"$\r\n",
            b"$9999999999999999999\r\n",
            b"$12345678901234567890\r\n",
            b"$9\r\n123456789\r\n",
            b"$8\r\n12345678\r\n",
            b"$7\r\n1234567\r\n$1\r\na\r\n",
        ];
        for stream in streams {
            for limits in [Limits::default(), tight] {
                assert_eq!(
                    read_all(stream, limits, false),
                    read_all(stream, limits, true),
                    "{:?} within {limits:?}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    #[test]
    fn a_top_level_bulk_string_reads_as_the_decoder_reads_it_without_it() {
        let payloads: [&[u8]; 4] = [b"", b"v", b"a\r\nb$3\r\n", &[0xff; 300]];
        for payload in payloads {
            let mut frame = format!("${}\r\n", payload.len()).into_bytes();
            frame.extend_from_slice(payload);
            frame.extend_from_slice(b"\r\n");
            frame.extend_from_slice(b"+OK\r\n");
            let mut decoder = FrameDecoder::new(Limits::default());
            let (value, used) = decoder.decode(&frame).expect("valid").expect("whole");
            assert_eq!(value, Value::Bulk(payload.to_vec()));
            assert_eq!(value, by_the_decoder(&frame[..used]));
            assert_eq!(&frame[used..], b"+OK\r\n");
        }
        for other in [&b"$-1\r\n"[..], b"+OK\r\n", b":7\r\n", b"*1\r\n$1\r\nx\r\n"] {
            assert_eq!(whole_bulk(other, &Limits::default()), None, "{other:?}");
        }
    }
}
