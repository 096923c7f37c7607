//! How much a Redis server may make us hold: checked while a frame is scanned, before
//! anything is allocated for it.

/// Bounds on what one frame from the server may declare or contain.
///
/// Every length a frame declares is checked against these while the frame is scanned,
/// before the frame is decoded or its bytes are held past the limit, so a hostile or
/// broken server can make the connection fail with a [`ProtocolError`] but never make
/// it allocate without bound or recurse deeper than [`Limits::max_depth`].
///
/// [`ProtocolError`]: super::ProtocolError
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest bulk string (`$`), blob error (`!`) or verbatim string (`=`), in bytes.
    /// Default 512 MiB, Redis's own `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// Most elements in one array, set or push, or pairs in one map or attribute.
    /// Default 4 Mi (2^22).
    pub max_aggregate_len: usize,
    /// Deepest nesting of aggregates (an array inside an array is depth 2). Default 32;
    /// values above [`Limits::MAX_DEPTH`] are treated as [`Limits::MAX_DEPTH`].
    pub max_depth: usize,
    /// Longest simple string, simple error, number, double or big number line, in
    /// bytes. Default 64 KiB.
    pub max_line_len: usize,
    /// Most bytes in one whole frame, nested elements included. Default 1 GiB.
    pub max_frame_len: usize,
}

impl Limits {
    /// The deepest nesting any configuration may allow: the decoder recurses once per
    /// level, and this keeps it far inside a 2 MiB thread stack.
    pub const MAX_DEPTH: usize = 128;

    /// The nesting limit in force (`max_depth`, at most [`Limits::MAX_DEPTH`]).
    pub fn depth(&self) -> usize {
        self.max_depth.min(Self::MAX_DEPTH)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_aggregate_len: 1 << 22,
            max_depth: 32,
            max_line_len: 64 * 1024,
            max_frame_len: 1024 * 1024 * 1024,
        }
    }
}
