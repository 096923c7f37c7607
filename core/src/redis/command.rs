//! `Command`: one command and its arguments, kept encoded as RESP bulk strings, and
//! what the connection needs to know about it to match its answers.

use std::borrow::Cow;
use std::fmt;

/// One Redis command: its name and arguments, all binary-safe.
///
/// The arguments are encoded as they are added, so sending costs one copy.
/// `Debug` never shows the arguments of commands that carry secrets (`AUTH`, `HELLO`,
/// `ACL`, `CONFIG`, `MIGRATE`).
///
/// ```
/// use effectful::redis::Command;
///
/// let set = Command::new("SET").arg("greeting").arg("hello").arg("EX").arg_int(60);
/// assert_eq!(set.len(), 5);
/// assert_eq!(format!("{set:?}"), r#"Command("SET" "greeting" "hello" "EX" "60")"#);
/// let auth = Command::new("AUTH").arg("alice").arg("s3cret");
/// assert_eq!(format!("{auth:?}"), r#"Command("AUTH" <2 arguments redacted>)"#);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// `$len\r\narg\r\n` for the name and each argument.
    body: Vec<u8>,
    argc: usize,
}

impl Command {
    /// A command with no arguments yet.
    pub fn new(name: impl AsRef<[u8]>) -> Command {
        let mut command = Command {
            body: Vec::with_capacity(64),
            argc: 0,
        };
        command.push(name);
        command
    }

    /// This command with one more argument.
    pub fn arg(mut self, arg: impl AsRef<[u8]>) -> Command {
        self.push(arg);
        self
    }

    /// This command with one more argument, an integer in decimal.
    pub fn arg_int(mut self, n: i64) -> Command {
        self.push(itoa::Buffer::new().format(n));
        self
    }

    /// Adds one argument.
    pub fn push(&mut self, arg: impl AsRef<[u8]>) {
        self.push_concat(&[arg.as_ref()]);
    }

    /// Adds one argument made of `parts` one after the other (a key under its
    /// prefix), with no string between.
    pub(crate) fn push_concat(&mut self, parts: &[&[u8]]) {
        encode_arg(&mut self.body, parts);
        self.argc += 1;
    }

    /// A command from its name and arguments, or `None` if there is no name.
    pub fn from_parts<I>(parts: I) -> Option<Command>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut parts = parts.into_iter();
        let mut command = Command::new(parts.next()?);
        for part in parts {
            command.push(part);
        }
        Some(command)
    }

    /// How many parts: the name and the arguments.
    #[allow(clippy::len_without_is_empty)] // a command always has its name
    pub fn len(&self) -> usize {
        self.argc
    }

    /// The name and then each argument.
    pub fn parts(&self) -> Parts<'_> {
        Parts { rest: &self.body }
    }

    /// The command's name, as given.
    pub fn name(&self) -> &[u8] {
        self.parts().next().unwrap_or_default()
    }

    /// Appends the command's RESP encoding to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        encode_count(out, self.argc);
        out.extend_from_slice(&self.body);
    }

    /// The `i`th part (0 is the name).
    pub(crate) fn part(&self, i: usize) -> Option<&[u8]> {
        self.parts().nth(i)
    }

    fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Appends `*{n}\r\n`, the head of a command of `n` parts.
fn encode_count(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string made of `pieces` one after the other.
fn encode_arg(out: &mut Vec<u8>, pieces: &[&[u8]]) {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the RESP encoding of the command `name` with `args`, each argument made
/// of its pieces one after the other: what a [`Command`] of them would encode, with
/// no command built.
pub(crate) fn encode_parts(out: &mut Vec<u8>, name: &[u8], args: &[&[&[u8]]]) {
    encode_count(out, 1 + args.len());
    encode_arg(out, &[name]);
    for arg in args {
        encode_arg(out, arg);
    }
}

/// Appends `GET {head}{key}` (a key under its prefix) with as few copies as it can:
/// the constant head in one, then the length, the two pieces and the end (a Cache
/// read's command, written once per effect).
pub(crate) fn encode_get(out: &mut Vec<u8>, head: &[u8], key: &[u8]) {
    let len = head.len() + key.len();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(len).as_bytes();
    out.reserve(14 + digits.len() + 2 + len + 2);
    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$");
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(head);
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

/// The parts of a [`Command`]: its name, then its arguments.
#[derive(Clone, Debug)]
pub struct Parts<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The body is ours and well formed; on anything else, stop.
        let rest = self.rest.strip_prefix(b"$")?;
        let cr = memchr::memchr(b'\r', rest)?;
        let len = usize::try_from(super::decimal(&rest[..cr])?).ok()?;
        let start = cr + 2;
        let arg = rest.get(start..start.checked_add(len)?)?;
        self.rest = rest.get(start + len + 2..)?;
        Some(arg)
    }
}

/// Commands whose arguments may hold secrets.
const SECRET_BEARING: [&str; 5] = ["AUTH", "HELLO", "ACL", "CONFIG", "MIGRATE"];

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Command(")?;
        let mut parts = self.parts();
        if let Some(name) = parts.next() {
            write!(f, "{:?}", String::from_utf8_lossy(name))?;
        }
        if SECRET_BEARING.iter().any(|s| self.is(s)) {
            let n = self.argc.saturating_sub(1);
            if n > 0 {
                write!(
                    f,
                    " <{n} argument{} redacted>",
                    if n == 1 { "" } else { "s" }
                )?;
            }
        } else {
            for part in parts {
                write!(f, " {:?}", String::from_utf8_lossy(part))?;
            }
        }
        f.write_str(")")
    }
}

/// What answering a command does to the connection, beyond its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommandKind {
    /// Nothing: one reply.
    Plain,
    /// `HELLO n`: on success, replies are in RESP `n` from now on.
    Hello(Option<u8>),
    /// `SELECT db`.
    Select(Option<i64>),
    /// `RESET`: back to RESP2, database 0, no subscriptions.
    Reset,
    /// A pub/sub command, answered by one confirmation per channel.
    PubSub {
        kind: super::SubscriptionKind,
        subscribe: bool,
        /// Confirmations still to come; `None` until the first confirmation of an
        /// unsubscribe from everything, which is answered once per subscription.
        remaining: Option<usize>,
    },
}

/// Sorts a command by what its answer does, or names why it cannot be sent.
pub(crate) fn classify(command: &Command) -> Result<CommandKind, &'static str> {
    classify_parts(command.name(), command.len(), || {
        command.part(1).map(Cow::Borrowed)
    })
}

/// [`classify`] for the command `name` of `len` parts (the name included), whose
/// first argument `first` gives (asked only of the few commands it matters to).
pub(crate) fn classify_parts<'a>(
    name: &[u8],
    len: usize,
    first: impl Fn() -> Option<Cow<'a, [u8]>>,
) -> Result<CommandKind, &'static str> {
    use super::SubscriptionKind::{Channel, Pattern, Shard};
    // Every name below has 4 to 12 letters: the usual commands (GET, SET, EVAL...)
    // are told apart by their length alone.
    if !(4..=12).contains(&name.len()) {
        return Ok(CommandKind::Plain);
    }
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    let channels = len.saturating_sub(1);
    let pubsub = |kind, subscribe: bool| {
        let remaining = if channels == 0 && !subscribe {
            None
        } else {
            Some(channels)
        };
        Ok(CommandKind::PubSub {
            kind,
            subscribe,
            remaining,
        })
    };
    if is("SUBSCRIBE") {
        pubsub(Channel, true)
    } else if is("PSUBSCRIBE") {
        pubsub(Pattern, true)
    } else if is("SSUBSCRIBE") {
        pubsub(Shard, true)
    } else if is("UNSUBSCRIBE") {
        pubsub(Channel, false)
    } else if is("PUNSUBSCRIBE") {
        pubsub(Pattern, false)
    } else if is("SUNSUBSCRIBE") {
        pubsub(Shard, false)
    } else if is("HELLO") {
        let version = first().and_then(|v| match &*v {
            b"2" => Some(2),
            b"3" => Some(3),
            _ => None,
        });
        Ok(CommandKind::Hello(version))
    } else if is("SELECT") {
        let db = first().and_then(|d| std::str::from_utf8(&d).ok()?.parse().ok());
        Ok(CommandKind::Select(db))
    } else if is("RESET") {
        Ok(CommandKind::Reset)
    } else if is("MONITOR") {
        Err("MONITOR")
    } else if is("SYNC") {
        Err("SYNC")
    } else if is("PSYNC") {
        Err("PSYNC")
    } else if is("CLIENT") && first().is_some_and(|sub| sub.eq_ignore_ascii_case(b"REPLY")) {
        Err("CLIENT REPLY")
    } else {
        Ok(CommandKind::Plain)
    }
}
