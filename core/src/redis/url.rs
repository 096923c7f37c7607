//! `RedisUrl`: `redis://` and `rediss://` URLs, read without ever echoing a secret.

use std::fmt;
use std::str::FromStr;

use super::config::{Password, Protocol, RedisConfig};

/// A parsed `redis://` (plain TCP) or `rediss://` (TLS) URL:
/// `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?db=N&protocol=2|3]`.
///
/// The user name and password are percent-decoded (`%40` for `@`, `%2F` for `/`); a
/// user name without a password is refused, since it is most likely a password
/// written without its colon. `Debug` and `Display` show the password as
/// `<redacted>`, and no [`UrlError`] quotes any part of the URL.
///
/// ```
/// use effectful::redis::RedisUrl;
///
/// let url: RedisUrl = "rediss://app:p%40ss@cache.internal:6380/2".parse().unwrap();
/// assert!(url.tls());
/// assert_eq!((url.host(), url.port(), url.db()), ("cache.internal", 6380, 2));
/// assert_eq!(url.username(), Some("app"));
/// assert_eq!(url.password().map(|p| p.expose()), Some("p@ss"));
/// assert_eq!(url.to_string(), "rediss://app:<redacted>@cache.internal:6380/2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    tls: bool,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<Password>,
    db: i64,
    protocol: Option<Protocol>,
}

/// Why a Redis URL was refused. The messages never quote the URL, which may hold a
/// password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not `redis://` or `rediss://`.
    #[error("a Redis URL starts with redis:// (or rediss:// for TLS)")]
    Scheme,
    /// No host.
    #[error(
        "the Redis URL has no host: write redis://HOST[:PORT] (if the password holds \
         / ? # or @, percent-encode them as %2F %3F %23 %40)"
    )]
    MissingHost,
    /// A host with characters a host name or address cannot have.
    #[error(
        "the host in the Redis URL is not a host name or address (if the password holds \
         / ? # or @, percent-encode them as %2F %3F %23 %40)"
    )]
    Host,
    /// A port that is not a number from 1 to 65535.
    #[error(
        "the port in the Redis URL is not a number from 1 to 65535 (if the password holds \
         / ? # or @, percent-encode them as %2F %3F %23 %40)"
    )]
    Port,
    /// A database that is not a non-negative number, or two that disagree.
    #[error(
        "the database in the Redis URL (its path, or ?db=) is not a number from 0 up, or \
         the two disagree (if the password holds / ? or #, percent-encode them as %2F %3F %23)"
    )]
    Db,
    /// A `protocol` parameter that is not 2 or 3.
    #[error("the protocol parameter in the Redis URL is not 2 or 3 (or resp2, resp3)")]
    Protocol,
    /// A query parameter that is not `db` or `protocol`.
    #[error("the Redis URL has a query parameter other than db and protocol")]
    UnknownParameter,
    /// A `#fragment`.
    #[error("the Redis URL has a #fragment (if the password holds #, write it as %23)")]
    Fragment,
    /// A user name with no password.
    #[error(
        "the Redis URL has a user name but no password: write redis://USER:PASSWORD@HOST, \
         or redis://:PASSWORD@HOST for a password alone"
    )]
    UserWithoutPassword,
    /// A bad `%` escape, or one that does not decode to UTF-8.
    #[error(
        "the {0} in the Redis URL has a bad percent-escape (write %25 for a literal %) \
         or is not UTF-8 once decoded"
    )]
    Escape(&'static str),
}

impl RedisUrl {
    /// Reads a URL.
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::Scheme)?;
        let tls = if scheme.eq_ignore_ascii_case("redis") {
            false
        } else if scheme.eq_ignore_ascii_case("rediss") {
            true
        } else {
            return Err(UrlError::Scheme);
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                None => return Err(UrlError::UserWithoutPassword),
                Some((user, password)) => {
                    let user = decode(user).ok_or(UrlError::Escape("user name"))?;
                    let password = decode(password).ok_or(UrlError::Escape("password"))?;
                    (
                        (!user.is_empty()).then_some(user),
                        Some(Password::new(password)),
                    )
                }
            },
        };
        let (host, port) = host_port(hostport)?;
        let mut db = match path {
            "" => None,
            digits => Some(number(digits).ok_or(UrlError::Db)?),
        };
        let mut protocol = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).ok_or(UrlError::Escape("query"))?;
            match key {
                "db" => {
                    let n = number(&value).ok_or(UrlError::Db)?;
                    if db.is_some_and(|d| d != n) {
                        return Err(UrlError::Db);
                    }
                    db = Some(n);
                }
                "protocol" => {
                    protocol = Some(match value.to_ascii_lowercase().as_str() {
                        "2" | "resp2" => Protocol::Resp2,
                        "3" | "resp3" => Protocol::Resp3,
                        _ => return Err(UrlError::Protocol),
                    });
                }
                _ => return Err(UrlError::UnknownParameter),
            }
        }
        Ok(RedisUrl {
            tls,
            host,
            port,
            username,
            password,
            db: db.unwrap_or(0),
            protocol,
        })
    }

    /// Whether to connect with TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host name or address (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (6379 unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ACL user name, if given.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, if given.
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }

    /// The database (0 unless given).
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The protocol asked for with `?protocol=`, if any.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// A connection configuration with this URL's user, password, database and
    /// protocol, and defaults for the rest.
    pub fn config(&self) -> RedisConfig {
        let mut config = RedisConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            db: self.db,
            ..RedisConfig::default()
        };
        if let Some(protocol) = self.protocol {
            config.protocol = protocol;
        }
        config
    }
}

fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UrlError::Host);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UrlError::Host)?),
        };
        (host, port)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    {
        return Err(UrlError::Host);
    }
    let port = match port {
        None => 6379,
        Some(p) => number(p)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n != 0)
            .ok_or(UrlError::Port)?,
    };
    Ok((host.to_owned(), port))
}

/// Percent-decodes `s`; `None` on a bad escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<RedisUrl, UrlError> {
        RedisUrl::parse(s)
    }
}

impl fmt::Display for RedisUrl {
    /// The URL with its password replaced by `<redacted>`, fit for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.tls { "rediss" } else { "redis" })?;
        if self.password.is_some() {
            write!(f, "{}:<redacted>@", self.username.as_deref().unwrap_or(""))?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}/{}", self.port, self.db)?;
        match self.protocol {
            Some(Protocol::Resp2) => f.write_str("?protocol=2"),
            Some(Protocol::Resp3) => f.write_str("?protocol=3"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}
