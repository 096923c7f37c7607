//! Bounded excerpts of text quoted in messages: a record, a request, a key.
//!
//! An error that quotes what it was given must not grow with it: a replay divergence
//! that printed two whole trace records once made a 16.7 MB message. An [`Excerpt`]
//! shows a window of at most a fixed number of bytes and says how much it left out.

use std::fmt;

/// A window of at most a bounded number of bytes of a text, for quoting in a message.
///
/// It displays the window, with `[N bytes cut]…` before it and `…[N bytes cut]` after
/// it when it leaves text out on that side. The window never splits a character.
///
/// ```
/// use effectful::Excerpt;
///
/// assert_eq!(Excerpt::head("short", 64).to_string(), "short");
/// let long = "x".repeat(1_000);
/// assert_eq!(Excerpt::head(&long, 4).to_string(), "xxxx…[996 bytes cut]");
///
/// // Two texts that differ deep inside: each is shown around the first difference.
/// let a = format!("{}A{}", "=".repeat(500), "=".repeat(500));
/// let b = format!("{}B{}", "=".repeat(500), "=".repeat(500));
/// let (x, y) = Excerpt::pair(&a, &b, 8);
/// assert_eq!(x.to_string(), "[498 bytes cut]…==A=====…[495 bytes cut]");
/// assert_eq!(y.to_string(), "[498 bytes cut]…==B=====…[495 bytes cut]");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excerpt<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

impl<'a> Excerpt<'a> {
    /// How many bytes a message quotes of one text, unless it says otherwise: enough
    /// for a record's kind, ids and the start of its payload.
    pub const DEFAULT_LIMIT: usize = 240;

    /// The first `limit` bytes of `text` (fewer, to end on a character boundary).
    pub fn head(text: &'a str, limit: usize) -> Excerpt<'a> {
        Excerpt::window(text, 0, limit)
    }

    /// About `limit` bytes of `text` around byte `at`: a quarter of the window before
    /// it, the rest after (more before it when `at` is near the end).
    pub fn around(text: &'a str, at: usize, limit: usize) -> Excerpt<'a> {
        let at = at.min(text.len());
        let start = (at - (limit / 4).min(at)).min(text.len().saturating_sub(limit));
        Excerpt::window(text, start, limit)
    }

    /// `a` and `b`, each cut to about `limit` bytes around the first byte where they
    /// differ, so that the difference shows however long they are.
    pub fn pair(a: &'a str, b: &'a str, limit: usize) -> (Excerpt<'a>, Excerpt<'a>) {
        let at = first_difference(a, b);
        (Excerpt::around(a, at, limit), Excerpt::around(b, at, limit))
    }

    /// Whether the excerpt leaves some of the text out.
    pub fn is_cut(&self) -> bool {
        self.start > 0 || self.end < self.text.len()
    }

    fn window(text: &'a str, start: usize, limit: usize) -> Excerpt<'a> {
        let start = floor_char_boundary(text, start.min(text.len()));
        let end = floor_char_boundary(text, start.saturating_add(limit).min(text.len()));
        Excerpt { text, start, end }
    }
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start > 0 {
            write!(f, "[{} bytes cut]…", self.start)?;
        }
        f.write_str(&self.text[self.start..self.end])?;
        if self.end < self.text.len() {
            write!(f, "…[{} bytes cut]", self.text.len() - self.end)?;
        }
        Ok(())
    }
}

/// The byte offset of the first difference between `a` and `b` (the shorter one's
/// length when one is a prefix of the other), on a character boundary of both.
pub(crate) fn first_difference(a: &str, b: &str) -> usize {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    // Equal up to `at`, so a boundary of one below `at` is a boundary of the other.
    floor_char_boundary(a, at)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_text_is_shown_whole() {
        let excerpt = Excerpt::head("hello", 5);
        assert_eq!(excerpt.to_string(), "hello");
        assert!(!excerpt.is_cut());
    }

    #[test]
    fn an_excerpt_never_splits_a_character() {
        // "é" is two bytes: a limit of 2 would cut it after "a" and half of "é".
        let excerpt = Excerpt::head("aébc", 2);
        assert_eq!(excerpt.to_string(), "a…[4 bytes cut]");
        let (x, y) = Excerpt::pair("日本語", "日本人", 3);
        assert_eq!(x.to_string(), "[6 bytes cut]…語");
        assert_eq!(y.to_string(), "[6 bytes cut]…人");
    }

    #[test]
    fn an_excerpt_of_a_huge_text_stays_within_its_limit_plus_the_markers() {
        let huge = "y".repeat(16 << 20);
        let shown = Excerpt::around(&huge, 8 << 20, 240).to_string();
        assert!(shown.len() < 300, "{} bytes", shown.len());
        assert!(shown.starts_with("[8388548 bytes cut]…"), "{shown}");
    }

    #[test]
    fn a_pair_where_one_is_a_prefix_of_the_other_shows_where_the_shorter_ends() {
        let (x, y) = Excerpt::pair("abc", "abcdef", 4);
        assert_eq!(x.to_string(), "abc");
        assert_eq!(y.to_string(), "[2 bytes cut]…cdef");
    }
}
