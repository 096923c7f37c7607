//! The in-memory stream the framing reads from and writes to.

use std::io::{self, Read, Write};

/// What the driver handed in and what the framing wrote out. Reading an empty pipe
/// answers `WouldBlock`, which the framing takes as "no more bytes for now"; writing
/// always succeeds, into `outbound`, which the session bounds itself.
#[derive(Debug, Default)]
pub(super) struct Pipe {
    pub(super) inbound: Vec<u8>,
    read_at: usize,
    pub(super) outbound: Vec<u8>,
}

impl Pipe {
    /// Queues bytes received from the client for the framing to read.
    pub(super) fn push_inbound(&mut self, bytes: &[u8]) {
        if self.read_at == self.inbound.len() {
            self.inbound.clear();
            self.read_at = 0;
        }
        self.inbound.extend_from_slice(bytes);
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = &self.inbound[self.read_at..];
        if available.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.read_at += n;
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pipe_would_block_and_bytes_come_out_in_order() {
        let mut pipe = Pipe::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            pipe.read(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        pipe.push_inbound(b"abcdef");
        assert_eq!(pipe.read(&mut buf).ok(), Some(4));
        assert_eq!(&buf, b"abcd");
        pipe.push_inbound(b"g");
        assert_eq!(pipe.read(&mut buf).ok(), Some(3));
        assert_eq!(&buf[..3], b"efg");
        assert!(pipe.read(&mut buf).is_err());
    }
}
