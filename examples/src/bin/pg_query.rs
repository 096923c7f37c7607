//! `pg_query URL SQL`: runs SQL on PostgreSQL with the simple query protocol and
//! prints the results exactly as `psql -At -F '|' -c SQL` does.
//!
//! The connection is core's sans-IO [`PgConnection`]; `effectful-tokio` opens the
//! socket and negotiates TLS as the URL's `sslmode` says ([`PgConnector`]), and the
//! loop below moves bytes and time between the two, with the drain rule written out.
//!
//! - The URL is `postgres[ql]://[user[:password]@]host[:port][/dbname][?param=...]`
//!   with libpq's parameters (`sslmode`, `sslrootcert`, `connect_timeout`, ...).
//! - Each statement's result is printed as psql prints it with `-At -F '|'`: rows one
//!   a line, values separated by `|`, NULL as nothing; a command that returns no rows
//!   prints its tag (`INSERT 0 1`, `CREATE TABLE`), a query without rows nothing, and
//!   `INSERT`, `UPDATE`, `DELETE ... RETURNING` their rows and then their tag.
//! - An SQL error prints `ERROR:  <message>` and its SQLSTATE on stderr and exits with
//!   status 1 (as psql does); the results of statements before it in the same SQL
//!   are not printed (core answers a simple query with its error alone; psql prints
//!   them). A bad URL, a refused connection or TLS handshake, a failed login exit
//!   with status 2, as psql does when it cannot connect. The password never appears.
//!
//! `cargo run -p effectful-examples --bin pg_query -- postgresql://postgres@127.0.0.1/test 'SELECT 1'`

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use effectful::Time;
use effectful::postgres::{Event, NONCE_ENTROPY_LEN, PgConnection, PgError, ResultSet};
use effectful_tokio::postgres::{PgConnector, PgStream, PgUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: pg_query URL SQL\n  \
    e.g. pg_query 'postgresql://postgres@127.0.0.1:5432/postgres?sslmode=require' 'SELECT 1'";

/// Why the run failed, and the exit status psql would give.
struct Failure {
    status: u8,
    message: String,
}

fn cannot_connect(message: impl Into<String>) -> Failure {
    Failure {
        status: 2,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(_) => {
            eprintln!("pg_query: the arguments must be valid UTF-8");
            return ExitCode::from(2);
        }
    };
    let [url, sql] = args.as_slice() else {
        eprintln!("pg_query: expected a URL and the SQL\n{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pg_query: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(url, sql)) {
        Ok(results) => {
            let mut out = std::io::stdout().lock();
            let written = print_results(&mut out, &results).and_then(|()| out.flush());
            if written.is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("pg_query: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

/// Connects as `url` says, runs `sql`, and returns its results.
async fn run(url: &str, sql: &str) -> Result<Vec<ResultSet>, Failure> {
    let url = PgUrl::parse(url).map_err(|e| cannot_connect(e.to_string()))?;
    let config = url.config().map_err(|e| cannot_connect(e.to_string()))?;
    let connector = PgConnector::new(&url).map_err(|e| cannot_connect(e.to_string()))?;
    let mut stream = connector
        .connect()
        .await
        .map_err(|e| cannot_connect(format!("cannot connect to PostgreSQL: {e}")))?;
    let mut entropy = [0u8; NONCE_ENTROPY_LEN];
    effectful_tokio::entropy::fill_secret(&mut entropy)
        .map_err(|e| cannot_connect(format!("no OS randomness for the login: {e}")))?;
    let epoch = Instant::now();
    let mut conn = PgConnection::new(config, entropy, now(epoch));
    let query = conn
        .query(now(epoch), sql)
        .map_err(|e| failure_of(e, false))?;
    let mut logged_in = false;
    loop {
        // The drain rule: every event, then every byte to send, then wait.
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Ready => logged_in = true,
                Event::Done { id, result } if id == query => {
                    return result.map_err(|e| failure_of(e, logged_in));
                }
                Event::Closed(e) => return Err(failure_of(e, logged_in)),
                _ => {}
            }
        }
        flush(&mut conn, &mut stream, epoch).await;
        wait(&mut conn, &mut stream, epoch).await;
    }
}

fn now(epoch: Instant) -> Time {
    Time::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// Writes what the connection transmits; a failed write is the server gone.
async fn flush(conn: &mut PgConnection, stream: &mut PgStream, epoch: Instant) {
    while let Some(bytes) = conn.poll_transmit() {
        if stream.write_all(&bytes).await.is_err() {
            conn.handle_eof(now(epoch));
            return;
        }
    }
    if stream.flush().await.is_err() {
        conn.handle_eof(now(epoch));
    }
}

/// Reads once, or tells the connection its deadline (login or command timeout) came.
async fn wait(conn: &mut PgConnection, stream: &mut PgStream, epoch: Instant) {
    let mut buf = [0u8; 16 * 1024];
    let deadline = conn.poll_timeout();
    let sleep = async {
        match deadline {
            Some(at) => tokio::time::sleep_until((epoch + at.since_epoch()).into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        read = stream.read(&mut buf) => match read {
            Ok(0) | Err(_) => conn.handle_eof(now(epoch)),
            Ok(n) => conn.handle_input(now(epoch), &buf[..n]),
        },
        () = sleep => conn.handle_timeout(now(epoch)),
    }
}

/// An SQL error exits 1 as in psql; anything before the login, 2.
fn failure_of(error: PgError, logged_in: bool) -> Failure {
    match error {
        PgError::Db(db) if logged_in => {
            let mut message = format!("ERROR:  {} (SQLSTATE {})", db.message, db.code);
            if let Some(detail) = &db.detail {
                message.push_str(&format!("\nDETAIL:  {detail}"));
            }
            if let Some(hint) = &db.hint {
                message.push_str(&format!("\nHINT:  {hint}"));
            }
            Failure { status: 1, message }
        }
        error if logged_in => Failure {
            status: 1,
            message: error.to_string(),
        },
        error => cannot_connect(format!("cannot connect to PostgreSQL: {error}")),
    }
}

/// `psql -At -F '|'`: the rows of a result that returns rows, and the tag of one that
/// does not (nor of a `SELECT` without columns, which psql prints as nothing), or of
/// `INSERT`, `UPDATE`, `DELETE` after their `RETURNING` rows (psql's
/// `PrintQueryResult`).
fn print_results(out: &mut impl Write, results: &[ResultSet]) -> std::io::Result<()> {
    for result in results {
        let returns_rows = !result.columns.is_empty() || result.tag.starts_with("SELECT");
        for row in result.rows.iter().filter(|row| !row.is_empty()) {
            for i in 0..row.len() {
                if i > 0 {
                    out.write_all(b"|")?;
                }
                // Text (the simple protocol), as the server sent it; NULL is nothing.
                out.write_all(row.raw(i).unwrap_or_default())?;
            }
            out.write_all(b"\n")?;
        }
        let returning = ["INSERT", "UPDATE", "DELETE"]
            .iter()
            .any(|command| result.tag.starts_with(command));
        if !result.tag.is_empty() && (!returns_rows || returning) {
            writeln!(out, "{}", result.tag)?;
        }
    }
    Ok(())
}
