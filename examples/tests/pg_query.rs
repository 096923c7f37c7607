//! `pg_query` against the shared PostgreSQL server, its output (and exit status)
//! compared with `psql -At -F '|'` given the same URL and SQL, in a schema of its own.

#[path = "../../io-tokio/tests/pg_support/mod.rs"]
mod pg_support;

use std::process::{Command, Output};

use pg_support::{START_SERVER, Schema};

fn pg_query(url: &str, sql: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pg_query"))
        .args([url, sql])
        .output()
        .expect("run pg_query")
}

fn psql(url: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([url, "-X", "-At", "-F", "|", "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql ({e}); {START_SERVER}"))
}

/// Runs `sql` through both; asserts the same stdout and exit status; pg_query's
/// output.
fn same(url: &str, sql: &str) -> Output {
    let theirs = psql(url, sql);
    let ours = pg_query(url, sql);
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout),
        "{sql:?}: pg_query and psql -At -F '|' differ (psql said {:?}, pg_query {:?})",
        String::from_utf8_lossy(&theirs.stderr),
        String::from_utf8_lossy(&ours.stderr),
    );
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "{sql:?}: exit status"
    );
    ours
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn prints_types_nulls_and_separators_as_psql_does() {
    let schema = Schema::new("pg_query_types");
    let url = schema.url();
    pg_support::psql(&format!(
        "CREATE TABLE {s}.t (id int PRIMARY KEY, name text, score numeric, seen timestamptz, tags text[], doc jsonb, raw bytea, ok boolean);
         INSERT INTO {s}.t VALUES
           (1, 'plain', 1.50, '2024-01-02 03:04:05+00', '{{a,b}}', '{{\"k\": [1, null]}}', '\\x00ff', true),
           (2, 'with|bar and\nnewline', NULL, NULL, '{{}}', NULL, NULL, NULL),
           (3, '', -0.0001, 'infinity', '{{NULL,\"x y\"}}', '\"s\"', '', false)",
        s = schema.name
    ));
    let out = same(&url, "SELECT * FROM t ORDER BY id");
    assert!(stdout(&out).starts_with("1|plain|1.50|2024-01-02 03:04:05+00|{a,b}|"));
    assert!(stdout(&out).contains("\n2|with|bar and\nnewline|||{}|||\n"));
    same(
        &url,
        "SELECT 1::int2, -2::int8, 1::float8 / 3, 'NaN'::float4, 12345678901234567890.123::numeric, \
         DATE '2000-02-29', INTERVAL '1 day 02:03:04', 'a1b2c3d4-0000-4000-8000-000000000001'::uuid, \
         NULL, NULL::text, '', 'é ü ✓'",
    );
    same(&url, "SELECT name FROM t WHERE id > 100");
    same(&url, "SELECT count(*), max(score), min(seen) FROM t");
}

#[test]
fn several_statements_print_each_result_and_commands_print_their_tag() {
    let schema = Schema::new("pg_query_multi");
    let url = schema.url();
    // A temporary table is the session's own, so both tools can run the same text.
    let out = same(
        &url,
        "CREATE TEMP TABLE m (a int, b text); \
         INSERT INTO m VALUES (1, 'x'), (2, NULL), (NULL, 'z'); \
         SELECT * FROM m ORDER BY a NULLS FIRST; \
         UPDATE m SET b = 'y' WHERE a = 2; \
         SELECT b FROM m WHERE a = 2; \
         SELECT 1 WHERE false; \
         INSERT INTO m VALUES (4, 'w') RETURNING a, b; \
         DELETE FROM m; \
         SELECT; \
         DROP TABLE m",
    );
    assert_eq!(
        stdout(&out),
        "CREATE TABLE\nINSERT 0 3\n|z\n1|x\n2|\nUPDATE 1\ny\n4|w\nINSERT 0 1\nDELETE 4\nDROP TABLE\n"
    );
    same(
        &url,
        "BEGIN; CREATE TABLE IF NOT EXISTS kept (v int); COMMIT",
    );
    same(&url, "SELECT count(*) FROM kept; SHOW search_path");
}

#[test]
fn sql_errors_exit_1_with_the_message_and_sqlstate_on_stderr() {
    let schema = Schema::new("pg_query_errors");
    let url = schema.url();
    for (sql, message, code) in [
        ("SELECT 1/0", "division by zero", "22012"),
        ("SELEC 1", "syntax error at or near \"SELEC\"", "42601"),
        (
            "SELECT * FROM no_such_table",
            "relation \"no_such_table\" does not exist",
            "42P01",
        ),
    ] {
        let out = same(&url, sql);
        assert_eq!(out.status.code(), Some(1));
        let theirs = stderr(&psql(&url, sql));
        assert!(theirs.contains(&format!("ERROR:  {message}")), "{theirs}");
        let ours = stderr(&out);
        assert!(
            ours.contains(&format!("ERROR:  {message}")) && ours.contains(code),
            "{ours}"
        );
    }
}

#[test]
fn runs_over_tls_when_the_url_asks() {
    let schema = Schema::new("pg_query_tls");
    let url = format!("{}&sslmode=require", schema.url());
    let out = same(
        &url,
        "SELECT ssl, version IS NOT NULL FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(stdout(&out), "t|t\n");
    let plain = format!("{}&sslmode=disable", schema.url());
    let out = same(
        &plain,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(stdout(&out), "f\n");
}

#[test]
fn connection_failures_exit_2_with_a_message_that_never_shows_the_password() {
    let secret = "hunter2-secret";
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for (url, expected) in [
        (
            format!("postgresql://postgres:{secret}@127.0.0.1:{free}/test?connect_timeout=3"),
            "cannot connect to PostgreSQL",
        ),
        (
            format!("postgresql://postgres:{secret}@127.0.0.1:5432/no_such_database_zz"),
            "no_such_database_zz",
        ),
        (
            format!("postgresql://postgres:{secret}@127.0.0.1:5432/test?sslmode=sometimes"),
            "sslmode",
        ),
        (
            format!(
                "postgresql://postgres:{secret}@127.0.0.1:5432/test?sslmode=verify-full&sslrootcert=/no/such/ca.pem"
            ),
            "sslrootcert",
        ),
        (
            format!("mysql://postgres:{secret}@127.0.0.1/test"),
            "postgresql://",
        ),
    ] {
        let out = pg_query(&url, "SELECT 1");
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(secret), "{message}");
        assert!(out.stdout.is_empty());
    }
    let usage = Command::new(env!("CARGO_BIN_EXE_pg_query"))
        .output()
        .expect("run pg_query");
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("usage: pg_query URL SQL"));
}
