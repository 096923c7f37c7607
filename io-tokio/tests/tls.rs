//! `TlsClient` at each verification level: against a rustls server in the test, a
//! throwaway PostgreSQL 15 cluster with `ssl = on` (SSLRequest, then TLS, then the
//! startup through core's `PgConnection`), and a throwaway `redis-server --tls-port`.
//! Then the clients on it: every `sslmode` of a PostgreSQL URL (through
//! `PgConnector`, and the pool and its health check from the server's settings)
//! against a cluster that takes only TLS and one that takes none, and the Cache
//! family through `RedisBackend` on `rediss://`. Certificates are made per run with
//! the `openssl` command.

#[path = "../../core/tests/postgres/cluster.rs"]
mod cluster;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Cluster, run};
use effectful::Time;
use effectful::effect::{CacheLookup, GetCachedValue, PutCachedValue};
use effectful::postgres::{Event, PgConfig, PgConnection, TlsMode};
use effectful_tokio::Runtime;
use effectful_tokio::postgres::{PgConnector, PgDatabase, PgDatabaseConfig, PgUrl};
use effectful_tokio::redis::{PoolConfig, RedisBackend};
use effectful_tokio::server::{HealthCheck, Settings};
use effectful_tokio::tls::{TlsClient, TlsError, Verify};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOW: &str = "this test makes certificates with the `openssl` command (apt-get install openssl), \
    starts a throwaway PostgreSQL cluster with the server binaries (apt-get install postgresql-15) \
    as the `postgres` user through `runuser` (needs root), and a throwaway `redis-server` built with TLS \
    (apt-get install redis-server)";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A directory of certificates: `ca.crt` (the trusted root), `server.crt` and
/// `server.key` (for `localhost` and 127.0.0.1, signed by it), and `other-ca.crt`, a
/// root that signed nothing here. Removed when dropped.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "effectful-tls-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(&dir).args(args));
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=effectful test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write san.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        Certs { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A rustls server on a free port that echoes one line per connection.
async fn echo_server(certs: &Certs) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.path("server.crt"))
            .expect("read server.crt")
            .collect::<Result<_, _>>()
            .expect("parse server.crt");
    let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).expect("read server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                if let Ok(n) = tls.read(&mut buf).await {
                    let _ = tls.write_all(&buf[..n]).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// Connects with `client` as `server` and has a line echoed; the error otherwise.
async fn echo(client: &TlsClient, port: u16, server: &str) -> Result<(), TlsError> {
    let socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = client.connect(server, socket).await?;
    tls.write_all(b"hello over tls\n").await.expect("write");
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"hello over tls\n");
    Ok(())
}

fn handshake_reason(result: Result<(), TlsError>) -> String {
    match result {
        Err(TlsError::Handshake { reason, .. }) => reason,
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn each_level_verifies_what_it_promises() {
    let certs = Certs::make("levels");
    let port = echo_server(&certs).await;
    let ca = certs.path("ca.crt");
    let other = certs.path("other-ca.crt");

    // verify-full: the chain and the name.
    let full = TlsClient::new(Verify::Full, Some(&ca)).expect("client");
    echo(&full, port, "localhost")
        .await
        .expect("the right name");
    echo(&full, port, "127.0.0.1")
        .await
        .expect("the right address");
    let reason = handshake_reason(echo(&full, port, "db.example.com").await);
    assert!(reason.contains("not valid for name"), "{reason}");
    let untrusted = TlsClient::new(Verify::Full, Some(&other)).expect("client");
    let reason = handshake_reason(echo(&untrusted, port, "localhost").await);
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    // The bundled public roots do not know a private CA.
    let public = TlsClient::new(Verify::Full, None).expect("client");
    handshake_reason(echo(&public, port, "localhost").await);

    // verify-ca: the chain, any name.
    let chain = TlsClient::new(Verify::Chain, Some(&ca)).expect("client");
    echo(&chain, port, "db.example.com")
        .await
        .expect("any name");
    let untrusted = TlsClient::new(Verify::Chain, Some(&other)).expect("client");
    let reason = handshake_reason(echo(&untrusted, port, "localhost").await);
    assert!(reason.contains("UnknownIssuer"), "{reason}");

    // require: encrypted, nothing verified.
    let nothing = TlsClient::new(Verify::Nothing, None).expect("client");
    echo(&nothing, port, "db.example.com")
        .await
        .expect("anything");
    assert_eq!(nothing.verify(), Verify::Nothing);
}

#[tokio::test]
async fn bad_root_files_and_names_are_refused_clearly() {
    let certs = Certs::make("files");
    let missing = certs.path("no-such.crt");
    let error = TlsClient::new(Verify::Full, Some(&missing)).expect_err("a missing file");
    let text = error.to_string();
    assert!(text.contains("no-such.crt"), "{text}");

    // A key is not a certificate.
    let error = TlsClient::new(Verify::Chain, Some(&certs.path("server.key")))
        .expect_err("a file without certificates");
    assert!(
        error.to_string().contains("holds no PEM certificate"),
        "{error}"
    );

    let client = TlsClient::new(Verify::Nothing, None).expect("client");
    let port = echo_server(&certs).await;
    let socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let error = client
        .connect("not a host name", socket)
        .await
        .expect_err("a name TLS cannot verify");
    assert!(matches!(error, TlsError::ServerName(_)), "{error:?}");

    // A server that does not speak TLS: the handshake fails, it does not hang.
    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plain_port = plain.local_addr().expect("address").port();
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = plain.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let socket = TcpStream::connect(("127.0.0.1", plain_port))
        .await
        .expect("connect");
    let result = tokio::time::timeout(Duration::from_secs(10), client.connect("localhost", socket))
        .await
        .expect("the handshake ends");
    assert!(matches!(result, Err(TlsError::Handshake { .. })));
}

/// A throwaway cluster that takes TLS connections only (over TCP), on 127.0.0.1 and
/// 127.0.0.2 (an address its certificate does not name).
fn tls_cluster(certs: &Certs) -> Cluster {
    Cluster::start_with(
        "local all all trust\nhostssl all all 127.0.0.0/8 trust\n",
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
         listen_addresses = '127.0.0.1,127.0.0.2'\n",
        &[
            ("server.crt", &certs.path("server.crt")),
            ("server.key", &certs.path("server.key")),
        ],
    )
}

fn now(epoch: Instant) -> Time {
    Time::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// Writes what the connection transmits, then reads one chunk into it.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut PgConnection,
    io: &mut S,
    epoch: Instant,
) {
    while let Some(bytes) = conn.poll_transmit() {
        io.write_all(&bytes).await.expect("write to the server");
    }
    io.flush().await.expect("flush");
    let mut buf = [0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), io.read(&mut buf))
        .await
        .expect("the server answers")
        .expect("read from the server");
    if n == 0 {
        conn.handle_eof(now(epoch));
    } else {
        conn.handle_input(now(epoch), &buf[..n]);
    }
}

/// The SSLRequest in plain text, TLS verified by `client`, then the startup and a
/// query over TLS; the query's answer.
async fn query_over_tls(port: u16, client: &TlsClient, server: &str) -> Result<String, String> {
    let epoch = Instant::now();
    let config = PgConfig::new("postgres")
        .database("postgres")
        .tls(TlsMode::Require);
    let mut conn = PgConnection::new(config, *b"tls-test-entropy!!", now(epoch));
    let mut plain = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    loop {
        match conn.poll_event() {
            Some(Event::StartTls) => break,
            Some(Event::Closed(e)) => return Err(e.to_string()),
            Some(_) => {}
            None => pump(&mut conn, &mut plain, epoch).await,
        }
    }
    let mut tls = client
        .connect(server, plain)
        .await
        .map_err(|e| e.to_string())?;
    conn.handle_tls_ready(now(epoch));
    query_when_ready(conn, &mut tls, epoch, SSL_IN_USE).await
}

const SSL_IN_USE: &str = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// Waits for `conn` to be ready, runs `sql` and returns its first value.
async fn query_when_ready<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: PgConnection,
    io: &mut S,
    epoch: Instant,
    sql: &str,
) -> Result<String, String> {
    let mut asked = None;
    loop {
        match conn.poll_event() {
            Some(Event::Ready) if asked.is_none() => {
                asked = Some(conn.query(now(epoch), sql).expect("query"));
            }
            Some(Event::Done { id, result }) if Some(id) == asked => {
                let sets = result.map_err(|e| e.to_string())?;
                let row = &sets[0].rows[0];
                return row.get::<String, _>(0).map_err(|e| e.to_string());
            }
            Some(Event::Closed(e)) => return Err(e.to_string()),
            Some(_) => {}
            None => pump(&mut conn, io, epoch).await,
        }
    }
}

/// Connects as `url` says (its sslmode) and asks whether the session is encrypted.
async fn ssl_in_use(url: &str) -> Result<String, String> {
    let epoch = Instant::now();
    let url = PgUrl::parse(url).map_err(|e| e.to_string())?;
    let connector = PgConnector::new(&url).map_err(|e| e.to_string())?;
    let mut stream = connector.connect().await.map_err(|e| e.to_string())?;
    let config = url.config().map_err(|e| e.to_string())?;
    let conn = PgConnection::new(config, *b"tls-test-entropy!!", now(epoch));
    let encrypted = stream.is_tls();
    let answer = query_when_ready(conn, &mut stream, epoch, SSL_IN_USE).await?;
    assert_eq!(
        answer == "true",
        encrypted,
        "the server and the stream agree on TLS"
    );
    Ok(answer)
}

#[tokio::test]
async fn postgres_speaks_tls_after_its_ssl_request_at_each_level() {
    let certs = Certs::make("pg");
    // Blocking here is fine: nothing else runs on this test's runtime yet.
    let cluster = tls_cluster(&certs);
    let ca = certs.path("ca.crt");
    for (verify, server) in [
        (Verify::Full, "localhost"),
        (Verify::Chain, "127.0.0.1"),
        (Verify::Nothing, "127.0.0.1"),
    ] {
        let client = TlsClient::new(verify, Some(&ca)).expect("client");
        let ssl = query_over_tls(cluster.port, &client, server).await;
        assert_eq!(
            ssl.as_deref(),
            Ok("true"),
            "{verify:?}: pg_stat_ssl says the session is encrypted"
        );
    }
    let full = TlsClient::new(Verify::Full, Some(&ca)).expect("client");
    let refused = query_over_tls(cluster.port, &full, "db.example.com").await;
    assert!(refused.is_err_and(|e| e.contains("not valid for name")));
}

fn pg_url(host: &str, port: u16, query: &str) -> String {
    format!("postgresql://postgres@{host}:{port}/postgres?connect_timeout=5&{query}")
}

#[tokio::test]
async fn each_sslmode_connects_or_fails_as_libpq_does_against_a_tls_only_server() {
    let certs = Certs::make("sslmode");
    let cluster = tls_cluster(&certs);
    let port = cluster.port;
    let ca = certs.path("ca.crt").display().to_string();
    let other = certs.path("other-ca.crt").display().to_string();
    for (host, query) in [
        ("127.0.0.1", String::new()),
        ("127.0.0.1", "sslmode=prefer".to_owned()),
        ("127.0.0.1", "sslmode=require".to_owned()),
        ("127.0.0.2", format!("sslmode=require&sslrootcert={ca}")),
        ("127.0.0.2", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("localhost", format!("sslmode=verify-full&sslrootcert={ca}")),
        ("127.0.0.1", format!("sslmode=verify-full&sslrootcert={ca}")),
    ] {
        let got = ssl_in_use(&pg_url(host, port, &query)).await;
        assert_eq!(got.as_deref(), Ok("true"), "{host} {query}");
    }
    // Refused: plain text (by the server's pg_hba.conf), a certificate for another
    // name, a chain to another root, the public roots for a private CA.
    for (host, query, expected) in [
        ("127.0.0.1", "sslmode=disable".to_owned(), "no encryption"),
        (
            "127.0.0.2",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "not valid for name",
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={other}"),
            "UnknownIssuer",
        ),
        (
            "127.0.0.1",
            format!("sslmode=require&sslrootcert={other}"),
            "UnknownIssuer",
        ),
        (
            "localhost",
            "sslmode=verify-full".to_owned(),
            "UnknownIssuer",
        ),
    ] {
        let error = ssl_in_use(&pg_url(host, port, &query))
            .await
            .expect_err(&query);
        assert!(error.contains(expected), "{host} {query}: {error}");
    }
}

#[tokio::test]
async fn against_a_server_without_tls_prefer_goes_plain_and_require_fails() {
    let cluster = Cluster::start("local all all trust\nhost all all 127.0.0.1/32 trust\n");
    let port = cluster.port;
    for query in ["sslmode=prefer", "sslmode=disable", ""] {
        let got = ssl_in_use(&pg_url("127.0.0.1", port, query)).await;
        assert_eq!(got.as_deref(), Ok("false"), "{query}");
    }
    for mode in ["require", "verify-ca", "verify-full"] {
        let error = ssl_in_use(&pg_url("127.0.0.1", port, &format!("sslmode={mode}")))
            .await
            .expect_err(mode);
        assert!(
            error.contains("does not accept TLS") && error.contains(&format!("sslmode={mode}")),
            "{error}"
        );
    }
}

#[test]
fn an_unreadable_sslrootcert_is_refused_naming_the_setting_and_never_the_password() {
    let certs = Certs::make("rootfile");
    let missing = certs.path("no-such-ca.crt").display().to_string();
    let not_a_cert = certs.path("server.key").display().to_string();
    for (file, expected) in [
        (&missing, "no-such-ca.crt"),
        (&not_a_cert, "holds no PEM certificate"),
    ] {
        let url = format!(
            "postgresql://app:hunter2-secret@127.0.0.1/app?sslmode=verify-full&sslrootcert={file}"
        );
        let error = PgDatabaseConfig::from_url(&url)
            .expect_err("an unreadable root file")
            .to_string();
        assert!(error.contains("sslrootcert"), "{error}");
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[tokio::test]
async fn the_pool_and_health_check_from_database_url_run_over_tls() {
    let certs = Certs::make("pool");
    let cluster = tls_cluster(&certs);
    let url = pg_url(
        "127.0.0.1",
        cluster.port,
        "sslmode=require&application_name=effectful-tls-pool",
    );
    let settings = Settings::from_lookup(|name| (name == "DATABASE_URL").then(|| url.clone()))
        .expect("settings");
    let config = PgDatabaseConfig::from_settings(&settings)
        .expect("a valid DATABASE_URL")
        .expect("DATABASE_URL is set")
        .pool_size(1, 2);
    // The migrations run first, over TLS too.
    let db: PgDatabase = PgDatabase::start(config).expect("started");
    let health = db.health_check();
    assert_eq!(health.check().await, Ok(()));
    let encrypted = cluster.psql(
        "SELECT count(*) FILTER (WHERE ssl) || '/' || count(*) FROM pg_stat_ssl \
         JOIN pg_stat_activity USING (pid) WHERE application_name = 'effectful-tls-pool'",
    );
    let (tls, all) = encrypted.trim().split_once('/').expect("two counts");
    assert!(
        all != "0" && tls == all,
        "TLS sessions / sessions: {encrypted}"
    );
    db.shutdown(Duration::from_secs(2));
}

/// A throwaway `redis-server` listening only on a TLS port, stopped when dropped.
struct RedisTls(std::process::Child, u16);

impl Drop for RedisTls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_with_tls(certs: &Certs) -> RedisTls {
    let port = free_port();
    let path = |file: &str| certs.path(file).display().to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server: {e}\n{HOW}"));
    let server = RedisTls(child, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server --tls-port {port} did not start\n{HOW}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// `HELLO 3` and one `PING` through core's `RedisConnection` over TLS from the first
/// byte (`rediss://`); the reply.
async fn ping_over_tls(port: u16, client: &TlsClient, server: &str) -> Result<String, String> {
    use effectful::redis::{
        Command as RedisCommand, Event as RedisEvent, RedisConfig, RedisConnection,
    };
    let epoch = Instant::now();
    let socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = client
        .connect(server, socket)
        .await
        .map_err(|e| e.to_string())?;
    let mut conn = RedisConnection::new(RedisConfig::default(), now(epoch));
    let id = conn
        .send(now(epoch), &RedisCommand::new("PING"))
        .expect("send PING");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(event) = conn.poll_event() {
            match event {
                RedisEvent::Reply { id: done, result } if done == id => {
                    let value = result.map_err(|e| e.to_string())?;
                    return Ok(value.as_str().unwrap_or_default().to_owned());
                }
                RedisEvent::Closed(e) => return Err(e.to_string()),
                _ => {}
            }
        }
        out.clear();
        while conn.poll_transmit(&mut out).is_some() {
            tls.write_all(&out).await.expect("write");
            out.clear();
        }
        tls.flush().await.expect("flush");
        let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
            .await
            .expect("Redis answers")
            .expect("read");
        if n == 0 {
            conn.handle_disconnect(now(epoch));
        } else {
            conn.handle_input(now(epoch), &buf[..n]);
        }
    }
}

#[tokio::test]
async fn redis_speaks_tls_from_the_first_byte() {
    let certs = Certs::make("redis");
    let server = redis_with_tls(&certs);
    let ca = certs.path("ca.crt");
    let full = TlsClient::new(Verify::Full, Some(&ca)).expect("client");
    assert_eq!(
        ping_over_tls(server.1, &full, "localhost").await.as_deref(),
        Ok("PONG")
    );
    let chain = TlsClient::new(Verify::Chain, Some(&ca)).expect("client");
    assert_eq!(
        ping_over_tls(server.1, &chain, "cache.example.com")
            .await
            .as_deref(),
        Ok("PONG")
    );
    let untrusted =
        TlsClient::new(Verify::Full, Some(&certs.path("other-ca.crt"))).expect("client");
    let refused = ping_over_tls(server.1, &untrusted, "localhost").await;
    assert!(refused.is_err_and(|e| e.contains("UnknownIssuer")));
}

fn rediss_backend(port: u16, query: &str) -> std::io::Result<RedisBackend> {
    let mut config = PoolConfig::from_url(&format!("rediss://localhost:{port}/0?{query}"))
        .map_err(std::io::Error::other)?;
    config.operation_timeout = Duration::from_secs(2);
    RedisBackend::start(config, format!("effectful-tls-{}:", std::process::id()))
}

/// Puts `value` under `key` and reads it back through the Cache family.
fn put_then_get(
    backend: &RedisBackend,
    key: &str,
) -> Result<CacheLookup<Vec<u8>>, effectful::EffectError> {
    let runtime = backend
        .register(Runtime::builder().shards(1))
        .build()
        .expect("a runtime");
    let key = key.to_owned();
    let result = runtime.block_on(async {
        let handle = runtime
            .handle()
            .spawn(move |fx| async move {
                fx.perform(PutCachedValue {
                    key: key.clone(),
                    value: b"over tls".to_vec(),
                    ttl_seconds: Some(60),
                })
                .await?;
                fx.perform(GetCachedValue { key }).await
            })
            .await
            .expect("spawned");
        handle.await.expect("the program ends")
    });
    runtime.shutdown(Duration::from_secs(1));
    result
}

#[test]
fn cache_effects_run_through_the_redis_backend_on_rediss() {
    let certs = Certs::make("rediss");
    let server = redis_with_tls(&certs);
    let ca = certs.path("ca.crt").display().to_string();
    let backend = rediss_backend(server.1, &format!("ssl_ca_certs={ca}")).expect("a pool");
    assert_eq!(
        put_then_get(&backend, "k"),
        Ok(CacheLookup::Hit {
            value: b"over tls".to_vec(),
            ttl_remaining: Some(60)
        })
    );
}

#[test]
fn rediss_with_the_wrong_ca_fails_clearly_unless_verification_is_skipped_explicitly() {
    let certs = Certs::make("rediss-ca");
    let server = redis_with_tls(&certs);
    let other = certs.path("other-ca.crt").display().to_string();
    let backend = rediss_backend(server.1, &format!("ssl_ca_certs={other}")).expect("a pool");
    let error = put_then_get(&backend, "k").expect_err("an untrusted certificate");
    assert!(
        error.message.contains("UnknownIssuer") && error.message.contains("Redis"),
        "{error}"
    );
    // The bundled public roots do not know the private CA either.
    let public = rediss_backend(server.1, "").expect("a pool");
    assert!(put_then_get(&public, "k").is_err());
    // Only an explicit `ssl_cert_reqs=none` accepts it.
    let insecure = rediss_backend(server.1, "ssl_cert_reqs=none").expect("a pool");
    assert!(put_then_get(&insecure, "k").is_ok());
    // A CA file that cannot be read is refused at start, naming the setting.
    let missing = certs.path("missing.crt").display().to_string();
    let error = rediss_backend(server.1, &format!("ssl_ca_certs={missing}"))
        .expect_err("a missing CA file")
        .to_string();
    assert!(
        error.contains("ssl_ca_certs") && error.contains("missing.crt"),
        "{error}"
    );
    let error = PoolConfig::from_url("rediss://localhost/0?ssl_cert_reqs=maybe")
        .expect_err("a bad ssl_cert_reqs");
    assert!(error.contains("ssl_cert_reqs"), "{error}");
}

/// A server that answers the SSLRequest with `answer` and then waits.
async fn fake_ssl_answer(answer: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            let _ = socket.read_exact(&mut request).await;
            let _ = socket.write_all(answer).await;
            let _ = socket.read(&mut [0u8; 1]).await;
        }
    });
    port
}

#[tokio::test]
async fn bytes_after_the_servers_yes_and_answers_that_are_not_postgres_are_refused() {
    for (answer, expected) in [
        (&b"Sinjected"[..], "CVE-2021-23222"),
        (&b"E"[..], "is this a PostgreSQL server?"),
    ] {
        let port = fake_ssl_answer(answer).await;
        let error = ssl_in_use(&pg_url("127.0.0.1", port, "sslmode=require"))
            .await
            .expect_err("refused");
        assert!(error.contains(expected), "{error}");
    }
}
