//! The frame scanner: finds where one RESP frame ends, checking every declared length
//! and the nesting depth against [`Limits`] before anything is decoded or allocated.
//!
//! It never recurses (open aggregates are a stack bounded by the depth limit), and it
//! resumes where it stopped: bytes arriving one at a time cost linear work in total,
//! where the `redis-protocol` decoder would parse the incomplete frame from its start
//! on every read.

use super::error::ProtocolError;
use super::limits::Limits;

/// The longest length line: a sign and the 19 digits of `i64::MAX`.
const MAX_LENGTH_LINE: usize = 20;

/// Which decoder a complete frame needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// The frame has RESP2 nulls (`$-1`, `*-1`) and only RESP2 types.
    Resp2,
    /// Everything else: RESP3 is a superset of RESP2 apart from those nulls.
    Resp3,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    /// Elements still to come (pairs count twice).
    remaining: u64,
    /// An attribute, which does not count as an element of what holds it.
    attribute: bool,
}

/// A resumable scan of the frame at the start of a buffer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scanner {
    /// The next element header, as an offset from the frame's start.
    pos: usize,
    /// Where the search for the current header's CRLF resumes.
    crlf_from: usize,
    /// Open aggregates, innermost last; never longer than the depth limit.
    stack: Vec<Open>,
    resp2_null: bool,
    resp3_only: bool,
}

enum Length {
    Null,
    Streamed,
    Count(u64),
}

impl Scanner {
    /// Scans `buf`, which starts at the frame's first byte and holds at least the bytes
    /// given to the previous call. `Ok(None)`: the frame is incomplete, call again with
    /// more. `Ok(Some((len, syntax)))`: the frame is `buf[..len]`; the scanner is reset
    /// for the next frame.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(usize, Syntax)>, ProtocolError> {
        loop {
            let Some(&tag) = buf.get(self.pos) else {
                return Ok(None);
            };
            let line_start = self.pos + 1;
            let max_line = match tag {
                b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => limits.max_line_len,
                _ => MAX_LENGTH_LINE,
            };
            let Some(cr) = self.find_crlf(buf, line_start, max_line, tag)? else {
                return Ok(None);
            };
            let line = &buf[line_start..cr];
            let after = cr + 2;
            let end = match tag {
                b'+' | b'-' | b':' => after,
                b',' | b'#' | b'_' | b'(' => {
                    self.resp3_only = true;
                    after
                }
                b'$' | b'!' | b'=' => {
                    if tag != b'$' {
                        self.resp3_only = true;
                    }
                    match length(line, tag)? {
                        Length::Null if tag == b'$' => {
                            self.resp2_null = true;
                            after
                        }
                        Length::Null => return Err(ProtocolError::BadLength { tag }),
                        Length::Streamed => return Err(ProtocolError::Streamed { tag }),
                        Length::Count(n) => {
                            if n > limits.max_bulk_len as u64 {
                                return Err(ProtocolError::BulkTooLong {
                                    len: n,
                                    max: limits.max_bulk_len,
                                });
                            }
                            if tag == b'=' && n < 4 {
                                return Err(ProtocolError::BadLength { tag });
                            }
                            // n <= max_bulk_len fits in usize; the sum saturates.
                            let end = after.saturating_add(n as usize).saturating_add(2);
                            check_frame_len(end, limits)?;
                            if buf.len() < end {
                                return Ok(None);
                            }
                            if &buf[end - 2..end] != b"\r\n" {
                                return Err(ProtocolError::MissingCrlf);
                            }
                            end
                        }
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    if tag != b'*' {
                        self.resp3_only = true;
                    }
                    match length(line, tag)? {
                        Length::Null if tag == b'*' => {
                            self.resp2_null = true;
                            after
                        }
                        Length::Null => return Err(ProtocolError::BadLength { tag }),
                        Length::Streamed => return Err(ProtocolError::Streamed { tag }),
                        Length::Count(n) => {
                            if n > limits.max_aggregate_len as u64 {
                                return Err(ProtocolError::AggregateTooLong {
                                    len: n,
                                    max: limits.max_aggregate_len,
                                });
                            }
                            let elements = if matches!(tag, b'%' | b'|') { n * 2 } else { n };
                            let attribute = tag == b'|';
                            if elements > 0 {
                                if self.stack.len() >= limits.depth() {
                                    return Err(ProtocolError::TooDeep {
                                        max: limits.depth(),
                                    });
                                }
                                check_frame_len(after, limits)?;
                                self.stack.push(Open {
                                    remaining: elements,
                                    attribute,
                                });
                                self.advance(after);
                                continue;
                            }
                            if attribute {
                                // An empty attribute: the element it annotates follows.
                                check_frame_len(after, limits)?;
                                self.advance(after);
                                continue;
                            }
                            after
                        }
                    }
                }
                b';' | b'.' => return Err(ProtocolError::Streamed { tag }),
                byte => return Err(ProtocolError::UnknownType { byte }),
            };
            check_frame_len(end, limits)?;
            self.advance(end);
            if self.complete_element() {
                return self.finish().map(|(len, syntax)| Some((len, syntax)));
            }
        }
    }

    /// Forgets the frame being scanned (it was read another way), keeping the
    /// stack's allocation for the next.
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
        self.crlf_from = 0;
        self.stack.clear();
        self.resp2_null = false;
        self.resp3_only = false;
    }

    fn advance(&mut self, to: usize) {
        self.pos = to;
        self.crlf_from = 0;
    }

    /// One element ended at `pos`: closes the aggregates it completes. True when the
    /// whole frame is done.
    fn complete_element(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            top.remaining -= 1;
            if top.remaining > 0 {
                return false;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                // The annotated element is still to come.
                return false;
            }
        }
        true
    }

    fn finish(&mut self) -> Result<(usize, Syntax), ProtocolError> {
        let len = self.pos;
        let syntax = match (self.resp2_null, self.resp3_only) {
            (true, true) => return Err(ProtocolError::MixedNulls),
            (true, false) => Syntax::Resp2,
            (false, _) => Syntax::Resp3,
        };
        *self = Scanner {
            stack: std::mem::take(&mut self.stack),
            ..Scanner::default()
        };
        Ok((len, syntax))
    }

    /// The offset of the `\r` ending the header line that starts at `line_start`.
    fn find_crlf(
        &mut self,
        buf: &[u8],
        line_start: usize,
        max_line: usize,
        tag: u8,
    ) -> Result<Option<usize>, ProtocolError> {
        // The line's `\r` may be no later than this.
        let last_cr = line_start.saturating_add(max_line);
        let end = buf.len().min(last_cr.saturating_add(1));
        let mut from = self.crlf_from.max(line_start);
        while from < end {
            let Some(i) = memchr::memchr(b'\r', &buf[from..end]) else {
                break;
            };
            let cr = from + i;
            match buf.get(cr + 1) {
                Some(b'\n') => return Ok(Some(cr)),
                Some(_) => from = cr + 1,
                None => {
                    self.crlf_from = cr;
                    return Ok(None);
                }
            }
        }
        if buf.len() > last_cr {
            return Err(if max_line == MAX_LENGTH_LINE {
                ProtocolError::BadLength { tag }
            } else {
                ProtocolError::LineTooLong { max: max_line }
            });
        }
        self.crlf_from = end;
        Ok(None)
    }
}

fn check_frame_len(len: usize, limits: &Limits) -> Result<(), ProtocolError> {
    if len > limits.max_frame_len {
        return Err(ProtocolError::FrameTooLong {
            len: len as u64,
            max: limits.max_frame_len,
        });
    }
    Ok(())
}

fn length(line: &[u8], tag: u8) -> Result<Length, ProtocolError> {
    match line {
        b"-1" => Ok(Length::Null),
        b"?" => Ok(Length::Streamed),
        digits if !digits.is_empty() && digits.len() <= 19 => {
            let mut n: u64 = 0;
            for &d in digits {
                if !d.is_ascii_digit() {
                    return Err(ProtocolError::BadLength { tag });
                }
                n = n * 10 + u64::from(d - b'0');
            }
            if n > i64::MAX as u64 {
                return Err(ProtocolError::BadLength { tag });
            }
            Ok(Length::Count(n))
        }
        _ => Err(ProtocolError::BadLength { tag }),
    }
}
