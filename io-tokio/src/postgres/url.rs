//! `postgres://` and `postgresql://` URLs, as libpq reads them (the parts this client
//! uses). No error and no `Debug` output ever contains the password or the URL.

use std::fmt;
use std::time::Duration;

use effectful::postgres::PgConfig;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address (TCP).
    Tcp(String),
    /// A directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    Unix(String),
}

/// `sslmode`, as libpq spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// libpq's `allow`: plain first (this client: plain).
    Allow,
    /// TLS if the server accepts it, plain text otherwise (the default).
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS with a certificate signed by `sslrootcert` (any host name).
    VerifyCa,
    /// `VerifyCa`, and the certificate names the host.
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives it (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Everything a `postgres://` URL says; [`PgUrl::config`] makes the connection
/// settings.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The role (default `postgres`).
    pub user: String,
    password: Option<String>,
    /// Where to connect (default `localhost`).
    pub host: Host,
    /// The port (default 5432).
    pub port: u16,
    /// The database (default: the user's name).
    pub dbname: Option<String>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// `connect_timeout`, in seconds in the URL.
    pub connect_timeout: Option<Duration>,
    /// `sslmode` (default `prefer`).
    pub sslmode: SslMode,
    /// `sslrootcert`: the file of root certificates (PEM) the server's chain must
    /// lead to; `system` (or none) means the bundled Mozilla roots.
    pub sslrootcert: Option<String>,
    /// `options`: server command-line options (`-c search_path=app`).
    pub options: Option<String>,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("options", &self.options)
            .finish()
    }
}

/// Why a URL was refused (never quoting the URL: it may hold a password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid PostgreSQL URL: {0}")]
pub struct UrlError(String);

impl UrlError {
    pub(crate) fn new(message: impl Into<String>) -> UrlError {
        UrlError(message.into())
    }
}

fn err(message: impl Into<String>) -> UrlError {
    UrlError(message.into())
}

fn decode(part: &str, what: &str) -> Result<String, UrlError> {
    crate::tls::percent_decode(part).ok_or_else(|| {
        err(format!(
            "a bad percent-escape in the {what}, or it is not UTF-8 once decoded"
        ))
    })
}

impl PgUrl {
    /// Parses `postgres://user:password@host:port/dbname?param=value&...`.
    pub fn parse(url: &str) -> Result<PgUrl, UrlError> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| err("it must start with postgresql:// or postgres://"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut parsed = PgUrl {
            user: "postgres".into(),
            password: None,
            host: Host::Tcp("localhost".into()),
            port: 5432,
            dbname: None,
            application_name: None,
            connect_timeout: None,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            options: None,
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                parsed.user = decode(user, "user name")?;
            }
            parsed.password = password.map(|p| decode(p, "password")).transpose()?;
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err("an IPv6 host without its closing ']'"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !host.is_empty() {
            parsed.host = host_of(decode(host, "host")?);
        }
        if let Some(port) = port.filter(|p| !p.is_empty()) {
            parsed.port = parse_port(port)?;
        }
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            parsed.dbname = Some(decode(path, "database name")?);
        }
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key, "query")?;
            let value = decode(value, &format!("value of {key}"))?;
            match key.as_str() {
                "user" => parsed.user = value,
                "password" => parsed.password = Some(value),
                "host" => parsed.host = host_of(value),
                "port" => parsed.port = parse_port(&value)?,
                "dbname" => parsed.dbname = Some(value),
                "application_name" => parsed.application_name = Some(value),
                "options" => parsed.options = Some(value),
                "sslrootcert" => parsed.sslrootcert = Some(value),
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        err(format!(
                            "connect_timeout must be whole seconds, not {value:?}"
                        ))
                    })?;
                    parsed.connect_timeout = Some(Duration::from_secs(secs));
                }
                "sslmode" => {
                    parsed.sslmode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" => SslMode::Allow,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(err(format!(
                                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                            )));
                        }
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown parameter {other:?} (this client reads user, password, host, port, dbname, application_name, connect_timeout, sslmode, sslrootcert, options)"
                    )));
                }
            }
        }
        Ok(parsed)
    }

    /// Whether a password was given.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The connection settings. They ask for no TLS ([`TlsMode::Disable`]): the
    /// driver negotiates it as `sslmode` says before the connection starts
    /// ([`PgConnector`](super::PgConnector)).
    ///
    /// [`TlsMode::Disable`]: effectful::postgres::TlsMode::Disable
    pub fn config(&self) -> Result<PgConfig, UrlError> {
        let mut config = PgConfig::new(self.user.clone());
        if let Some(db) = &self.dbname {
            config = config.database(db.clone());
        }
        if let Some(password) = &self.password {
            config = config.password(password.clone());
        }
        if let Some(name) = &self.application_name {
            config = config.application_name(name.clone());
        }
        if let Some(options) = &self.options {
            config = config.options(options.clone());
        }
        if let Some(timeout) = self.connect_timeout.filter(|t| !t.is_zero()) {
            config = config.connect_timeout(timeout);
        }
        Ok(config)
    }
}

fn host_of(host: String) -> Host {
    if host.starts_with('/') {
        Host::Unix(host)
    } else {
        Host::Tcp(host)
    }
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    port.parse().map_err(|_| {
        err(format!(
            "the port must be a number from 1 to 65535, not {port:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_is_read_and_percent_decoded() {
        let url = PgUrl::parse(
            "postgresql://app%40corp:p%40ss%3Aw0rd@db.example:6543/my%20db?application_name=chat&connect_timeout=7&sslmode=disable&sslrootcert=%2Fca.pem&options=-c%20search_path%3Dx",
        )
        .unwrap();
        assert_eq!(url.user, "app@corp");
        assert_eq!(url.password.as_deref(), Some("p@ss:w0rd"));
        assert_eq!(url.host, Host::Tcp("db.example".into()));
        assert_eq!(url.port, 6543);
        assert_eq!(url.dbname.as_deref(), Some("my db"));
        assert_eq!(url.application_name.as_deref(), Some("chat"));
        assert_eq!(url.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(url.sslmode, SslMode::Disable);
        assert_eq!(url.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(url.options.as_deref(), Some("-c search_path=x"));
        let config = url.config().unwrap();
        assert_eq!(config.user, "app@corp");
        assert_eq!(config.connect_timeout, Duration::from_secs(7));
    }

    #[test]
    fn defaults_ipv6_and_unix_sockets() {
        let url = PgUrl::parse("postgres://").unwrap();
        assert_eq!(
            (
                url.user.as_str(),
                &url.host,
                url.port,
                url.dbname.as_deref()
            ),
            ("postgres", &Host::Tcp("localhost".into()), 5432, None)
        );
        assert_eq!(url.sslmode, SslMode::Prefer);
        let v6 = PgUrl::parse("postgres://u@[::1]:5433/d").unwrap();
        assert_eq!((v6.host, v6.port), (Host::Tcp("::1".into()), 5433));
        let unix = PgUrl::parse("postgresql:///d?host=%2Fvar%2Frun%2Fpostgresql").unwrap();
        assert_eq!(unix.host, Host::Unix("/var/run/postgresql".into()));
    }

    #[test]
    fn the_password_is_in_no_error_and_no_debug_output() {
        let secret = "hunter2-secret";
        let url = PgUrl::parse(&format!("postgres://u:{secret}@h/d")).unwrap();
        assert!(!format!("{url:?}").contains(secret));
        assert!(!format!("{:?}", url.config().unwrap()).contains(secret));
        for bad in [
            format!("postgres://u:{secret}@h:99999/d"),
            format!("postgres://u:{secret}@h/d?sslmode=sometimes"),
            format!("postgres://u:{secret}@h/d?nope=1"),
            format!("postgres://u:{secret}%zz@h/d"),
            format!("mysql://u:{secret}@h/d"),
        ] {
            let message = PgUrl::parse(&bad)
                .and_then(|u| u.config().map(|_| u))
                .unwrap_err()
                .to_string();
            assert!(!message.contains(secret), "{message}");
            assert!(message.starts_with("invalid PostgreSQL URL: "), "{message}");
        }
    }
}
