//! Worked examples against a scripted in-memory server: each test writes the server's
//! bytes by hand and checks the client's bytes exactly, for every authentication
//! method and every way the server can misbehave.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use effectful::Time;
use effectful::postgres::{
    ClosedReason, Event, PgConfig, PgConnection, PgError, QueryId, TlsMode, TransactionStatus,
    Value,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::harness::TEST_ENTROPY;

// ---- the server's messages, byte by byte ----

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    msg(b'R', &body)
}

pub fn auth_ok() -> Vec<u8> {
    auth(0, &[])
}

pub fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', &[cstr(name), cstr(value)].concat())
}

fn backend_key(pid: i32, key: i32) -> Vec<u8> {
    msg(b'K', &[pid.to_be_bytes(), key.to_be_bytes()].concat())
}

/// The usual end of a startup: parameters, the cancel key, ReadyForQuery.
pub fn startup_tail() -> Vec<u8> {
    [
        parameter_status("server_version", "15.20"),
        parameter_status("client_encoding", "UTF8"),
        backend_key(4242, 0x1234_5678),
        ready(b'I'),
    ]
    .concat()
}

fn error_fields(severity: &str, code: &str, message: &str, extra: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        body.push(t);
        body.extend_from_slice(&cstr(v));
    }
    body.push(0);
    body
}

pub fn error(severity: &str, code: &str, message: &str, extra: &[(u8, &str)]) -> Vec<u8> {
    msg(b'E', &error_fields(severity, code, message, extra))
}

/// A RowDescription of `(name, type oid, format)` columns.
pub fn row_description(columns: &[(&str, u32, i16)]) -> Vec<u8> {
    let mut body = (columns.len() as u16).to_be_bytes().to_vec();
    for (name, oid, format) in columns {
        body.extend_from_slice(&cstr(name));
        body.extend_from_slice(&0u32.to_be_bytes()); // table
        body.extend_from_slice(&0i16.to_be_bytes()); // column
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // size
        body.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
        body.extend_from_slice(&format.to_be_bytes());
    }
    msg(b'T', &body)
}

pub fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    msg(b'D', &body)
}

pub fn command_complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

// ---- what the client must send ----

fn startup_bytes(user: &str, database: Option<&str>) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (k, v) in [
        ("user", Some(user)),
        ("client_encoding", Some("UTF8")),
        ("database", database),
    ] {
        if let Some(v) = v {
            body.extend_from_slice(&cstr(k));
            body.extend_from_slice(&cstr(v));
        }
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn frontend(tag: u8, body: &[u8]) -> Vec<u8> {
    msg(tag, body)
}

// ---- the script ----

pub struct Script {
    pub conn: PgConnection,
    pub now: Time,
}

impl Script {
    pub fn new(config: PgConfig) -> Script {
        Script {
            conn: PgConnection::new(config, TEST_ENTROPY, Time::ZERO),
            now: Time::ZERO,
        }
    }

    pub fn server(&mut self, bytes: &[u8]) {
        self.conn.handle_input(self.now, bytes);
    }

    /// Everything the client has to send, concatenated.
    pub fn sent(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.conn.poll_transmit() {
            out.extend_from_slice(&b);
        }
        out
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// The error of the one `Closed` among the events.
    pub fn closed(&mut self) -> PgError {
        let events = self.events();
        match events.last() {
            Some(Event::Closed(e)) => e.clone(),
            other => panic!("expected Closed last, got {other:?} in {events:?}"),
        }
    }

    /// A trust-auth startup to Ready.
    pub fn ready() -> Script {
        let mut s = Script::new(PgConfig::new("postgres").database("test"));
        assert_eq!(s.sent(), startup_bytes("postgres", Some("test")));
        s.server(&[auth_ok(), startup_tail()].concat());
        assert!(matches!(s.events()[..], [Event::Ready]));
        s
    }

    pub fn done(
        &mut self,
    ) -> Vec<(
        QueryId,
        Result<Vec<effectful::postgres::ResultSet>, PgError>,
    )> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Done { id, result } => Some((id, result)),
                _ => None,
            })
            .collect()
    }
}

fn password_config(password: &str) -> PgConfig {
    PgConfig::new("postgres")
        .database("test")
        .password(password)
}

/// A client with `password` whose startup message has gone out.
fn started(password: &str) -> Script {
    let mut s = Script::new(password_config(password));
    s.sent();
    s
}

// ---- authentication ----

#[test]
fn trust_startup_sends_the_startup_message_and_reports_the_session() {
    let mut s = Script::new(PgConfig::new("postgres").database("test"));
    assert_eq!(s.sent(), startup_bytes("postgres", Some("test")));
    assert!(!s.conn.is_ready());
    s.server(&auth_ok());
    assert!(s.events().is_empty());
    s.server(&startup_tail());
    assert!(matches!(s.events()[..], [Event::Ready]));
    assert!(s.conn.is_ready());
    assert_eq!(s.conn.parameter("server_version"), Some("15.20"));
    assert_eq!(s.conn.cancel_request().unwrap().process_id(), 4242);
    assert_eq!(
        s.conn.cancel_request().unwrap().to_bytes(),
        [
            0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x10, 0x92, 0x12, 0x34, 0x56, 0x78
        ]
    );
    assert_eq!(
        s.conn.poll_timeout(),
        None,
        "nothing in flight, nothing due"
    );
}

#[test]
fn cleartext_auth_sends_the_password_as_a_password_message() {
    let mut s = started("secret");
    s.server(&auth(3, &[]));
    assert_eq!(s.sent(), frontend(b'p', &cstr("secret")));
    s.server(&[auth_ok(), startup_tail()].concat());
    assert!(matches!(s.events()[..], [Event::Ready]));
}

#[test]
fn md5_auth_sends_the_salted_double_md5() {
    let mut s = started("secret");
    s.server(&auth(5, &[1, 2, 3, 4]));
    // md5(md5("secret" + "postgres") + salt), computed independently.
    assert_eq!(
        s.sent(),
        frontend(b'p', &cstr("md5bb41a296aab6baccb36ff243a562abff"))
    );
    s.server(&[auth_ok(), startup_tail()].concat());
    assert!(matches!(s.events()[..], [Event::Ready]));
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("scripted SCRAM");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The server's side of SCRAM-SHA-256, written out from RFC 5802 for this test.
struct ScramServer {
    salted: [u8; 32],
    server_first: String,
    client_first_bare: String,
}

impl ScramServer {
    fn new(password: &str, client_first: &str, iterations: u32) -> ScramServer {
        let client_first_bare = client_first
            .strip_prefix("n,,")
            .expect("scripted SCRAM")
            .to_owned();
        let client_nonce = client_first_bare
            .strip_prefix("n=,r=")
            .expect("scripted SCRAM");
        let salt = b"0123456789abcdef";
        let mut u = hmac(password.as_bytes(), &[&salt[..], &[0, 0, 0, 1]].concat());
        let mut salted = u;
        for _ in 1..iterations {
            u = hmac(password.as_bytes(), &u);
            salted.iter_mut().zip(u).for_each(|(s, u)| *s ^= u);
        }
        ScramServer {
            salted,
            server_first: format!(
                "r={client_nonce}ServerNonce,s={},i={iterations}",
                STANDARD.encode(salt)
            ),
            client_first_bare,
        }
    }

    /// Checks the client's proof; returns the server-final message.
    fn verify(&self, client_final: &str) -> Result<String, String> {
        let (without_proof, proof) = client_final.rsplit_once(",p=").expect("scripted SCRAM");
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_key = hmac(&self.salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof = STANDARD.decode(proof).expect("scripted SCRAM");
        let recovered: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if <[u8; 32]>::from(Sha256::digest(&recovered)) != stored_key {
            return Err("bad proof".into());
        }
        let server_key = hmac(&self.salted, b"Server Key");
        Ok(format!(
            "v={}",
            STANDARD.encode(hmac(&server_key, auth_message.as_bytes()))
        ))
    }
}

/// Runs a SCRAM exchange up to the server-final message; returns the script, the
/// server and the client-final message.
fn scram_until_final(password: &str) -> (Script, ScramServer, String) {
    let mut s = Script::new(password_config(password));
    s.sent();
    s.server(&auth(
        10,
        &[cstr("SCRAM-SHA-256-PLUS"), cstr("SCRAM-SHA-256"), vec![0]].concat(),
    ));
    let initial = s.sent();
    let nonce = STANDARD.encode(TEST_ENTROPY);
    let client_first = format!("n,,n=,r={nonce}");
    let mut body = cstr("SCRAM-SHA-256");
    body.extend_from_slice(&(client_first.len() as i32).to_be_bytes());
    body.extend_from_slice(client_first.as_bytes());
    assert_eq!(initial, frontend(b'p', &body), "SASLInitialResponse");
    let server = ScramServer::new(password, &client_first, 4096);
    s.server(&auth(11, server.server_first.as_bytes()));
    let response = s.sent();
    assert_eq!(response[0], b'p');
    let client_final = String::from_utf8(response[5..].to_vec()).expect("scripted SCRAM");
    assert!(client_final.starts_with(&format!("c=biws,r={nonce}ServerNonce,p=")));
    (s, server, client_final)
}

#[test]
fn scram_sha_256_proves_the_password_and_checks_the_servers_proof() {
    let (mut s, server, client_final) = scram_until_final("pencil");
    let server_final = server
        .verify(&client_final)
        .expect("the client's proof is right");
    s.server(&auth(12, server_final.as_bytes()));
    s.server(&[auth_ok(), startup_tail()].concat());
    assert!(matches!(s.events()[..], [Event::Ready]));
}

#[test]
fn scram_with_a_wrong_password_gives_a_proof_the_server_rejects() {
    let (_, server, client_final) = scram_until_final("not-pencil");
    let other = ScramServer {
        salted: ScramServer::new("pencil", &format!("n,,{}", server.client_first_bare), 4096)
            .salted,
        ..server
    };
    assert!(other.verify(&client_final).is_err());
}

#[test]
fn scram_refuses_a_server_that_cannot_prove_it_knows_the_password() {
    let (mut s, _, _) = scram_until_final("pencil");
    s.server(&auth(
        12,
        format!("v={}", STANDARD.encode([0u8; 32])).as_bytes(),
    ));
    let err = s.closed();
    assert!(matches!(err, PgError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("signature is wrong"), "{err}");
    assert!(!err.to_string().contains("pencil"));
}

#[test]
fn scram_refuses_authentication_ok_without_the_servers_proof() {
    let (mut s, _, _) = scram_until_final("pencil");
    s.server(&auth_ok());
    let err = s.closed();
    assert!(err.to_string().contains("never proved"), "{err}");
}

#[test]
fn scram_refuses_an_iteration_count_above_the_limit() {
    let mut s = Script::new(password_config("pencil").max_scram_iterations(10_000));
    s.sent();
    s.server(&auth(10, &[cstr("SCRAM-SHA-256"), vec![0]].concat()));
    s.sent();
    let nonce = STANDARD.encode(TEST_ENTROPY);
    s.server(&auth(
        11,
        format!("r={nonce}x,s=c2FsdA==,i=10001").as_bytes(),
    ));
    let err = s.closed();
    assert!(err.to_string().contains("max_scram_iterations"), "{err}");
}

#[test]
fn sasl_without_scram_sha_256_is_a_clear_error() {
    let mut s = started("pencil");
    s.server(&auth(10, &[cstr("SCRAM-SHA-256-PLUS"), vec![0]].concat()));
    let err = s.closed();
    assert!(err.to_string().contains("speaks SCRAM-SHA-256"), "{err}");
}

#[test]
fn a_password_request_without_a_password_says_what_to_configure() {
    for request in [
        auth(3, &[]),
        auth(5, &[9, 9, 9, 9]),
        auth(10, &[cstr("SCRAM-SHA-256"), vec![0]].concat()),
    ] {
        let mut s = Script::new(PgConfig::new("postgres"));
        s.sent();
        s.server(&request);
        let err = s.closed();
        assert!(err.to_string().contains("PgConfig has none"), "{err}");
        assert!(s.sent().is_empty(), "nothing is sent after the failure");
    }
}

#[test]
fn kerberos_gss_and_sspi_are_refused_with_the_methods_that_work() {
    for code in [2, 6, 7, 9] {
        let mut s = started("x");
        s.server(&auth(code, &[]));
        let err = s.closed();
        assert!(
            err.to_string()
                .contains("scram-sha-256, md5, password or trust"),
            "{err}"
        );
    }
}

#[test]
fn a_rejected_password_is_the_servers_error_without_the_password() {
    let mut s = started("hunter2");
    s.server(&auth(3, &[]));
    s.sent();
    s.server(&error(
        "FATAL",
        "28P01",
        "password authentication failed for user \"postgres\"",
        &[],
    ));
    let err = s.closed();
    assert_eq!(err.code(), Some("28P01"));
    assert!(!err.to_string().contains("hunter2"));
    assert!(!format!("{err:?}").contains("hunter2"));
    assert!(!format!("{:?}", password_config("hunter2")).contains("hunter2"));
}

#[test]
fn a_second_password_request_is_refused() {
    let mut s = started("secret");
    s.server(&auth(3, &[]));
    s.sent();
    s.server(&auth(3, &[]));
    assert!(matches!(s.closed(), PgError::Protocol(_)));
}

// ---- TLS negotiation ----

#[test]
fn tls_accepted_waits_for_the_handshake_then_starts_up() {
    let mut s = Script::new(PgConfig::new("postgres").tls(TlsMode::Require));
    assert_eq!(s.sent(), [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "SSLRequest");
    s.server(b"S");
    assert!(matches!(s.events()[..], [Event::StartTls]));
    assert!(s.sent().is_empty(), "nothing in plain text after 'S'");
    s.conn.handle_tls_ready(s.now);
    assert_eq!(s.sent(), startup_bytes("postgres", None));
}

#[test]
fn bytes_after_the_servers_s_are_refused_cve_2021_23222() {
    let mut s = Script::new(PgConfig::new("postgres").tls(TlsMode::Prefer));
    s.sent();
    s.server(&[b"S".as_slice(), &auth_ok(), &startup_tail()].concat());
    let err = s.closed();
    assert!(matches!(err, PgError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("CVE-2021-23222"), "{err}");
    assert!(s.sent().is_empty());
}

#[test]
fn bytes_before_the_handshake_finishes_are_refused() {
    let mut s = Script::new(PgConfig::new("postgres").tls(TlsMode::Require));
    s.sent();
    s.server(b"S");
    s.events();
    s.server(&auth_ok());
    assert!(s.closed().to_string().contains("before the TLS handshake"));
}

#[test]
fn tls_refused_fails_under_require_and_goes_on_in_plain_text_under_prefer() {
    let mut s = Script::new(PgConfig::new("postgres").tls(TlsMode::Require));
    s.sent();
    s.server(b"N");
    assert!(s.closed().to_string().contains("TlsMode::Require"));

    let mut s = Script::new(PgConfig::new("postgres").tls(TlsMode::Prefer));
    s.sent();
    s.server(b"N");
    assert_eq!(s.sent(), startup_bytes("postgres", None));
    s.server(&[auth_ok(), startup_tail()].concat());
    assert!(matches!(s.events()[..], [Event::Ready]));
}

#[test]
fn an_answer_to_ssl_request_other_than_s_or_n_is_refused() {
    let mut s = Script::new(PgConfig::new("postgres").tls(TlsMode::Prefer));
    s.sent();
    s.server(b"E\0\0\0\x05x");
    assert!(s.closed().to_string().contains("not 'S' or 'N'"));
}

// ---- framing and protocol errors ----

#[test]
fn a_declared_length_above_the_limit_is_refused_before_allocating() {
    let mut s = Script::new(PgConfig::new("postgres").max_message_len(1024));
    s.sent();
    s.server(&[b'R', 0xff, 0xff, 0xff, 0xf0]);
    let err = s.closed();
    assert_eq!(
        err,
        PgError::MessageTooLarge {
            len: 0xffff_fff0,
            limit: 1024
        }
    );
    assert!(err.to_string().contains("max_message_len"));
}

#[test]
fn a_declared_length_below_four_is_refused() {
    let mut s = Script::new(PgConfig::new("postgres"));
    s.sent();
    s.server(&[b'R', 0, 0, 0, 3]);
    assert!(matches!(s.closed(), PgError::Protocol(_)));
}

#[test]
fn negotiate_protocol_version_is_a_clear_error() {
    let mut s = Script::new(PgConfig::new("postgres"));
    s.sent();
    let mut body = 0i32.to_be_bytes().to_vec();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&cstr("_pq_.compression"));
    s.server(&msg(b'v', &body));
    let err = s.closed();
    assert_eq!(
        err,
        PgError::ProtocolVersion {
            newest_minor: 0,
            unrecognized: vec!["_pq_.compression".into()]
        }
    );
    assert!(err.to_string().contains("protocol 3.0"));
}

#[test]
fn an_unknown_message_tag_is_a_protocol_error() {
    let mut s = Script::ready();
    s.server(&msg(b'!', b"what"));
    let err = s.closed();
    assert!(matches!(err, PgError::Protocol(_)), "{err:?}");
}

#[test]
fn a_data_row_with_no_query_in_flight_is_a_protocol_error() {
    let mut s = Script::ready();
    s.server(&data_row(&[Some(b"1")]));
    let err = s.closed();
    assert!(err.to_string().contains("no query in flight"), "{err}");
}

#[test]
fn a_data_row_before_its_description_is_a_protocol_error() {
    let mut s = Script::ready();
    let id = s.conn.query(s.now, "SELECT 1").unwrap();
    s.server(&data_row(&[Some(b"1")]));
    let done = s.done();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, id);
    assert!(
        done[0]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("before the row's description")
    );
}

#[test]
fn a_data_row_with_the_wrong_number_of_values_is_a_protocol_error() {
    let mut s = Script::ready();
    s.conn.query(s.now, "SELECT 1").unwrap();
    s.server(
        &[
            row_description(&[("a", 23, 0)]),
            data_row(&[Some(b"1"), Some(b"2")]),
        ]
        .concat(),
    );
    assert!(matches!(s.done()[0].1, Err(PgError::Protocol(_))));
}

#[test]
fn a_parse_complete_in_a_simple_query_is_a_protocol_error() {
    let mut s = Script::ready();
    s.conn.query(s.now, "SELECT 1").unwrap();
    s.server(&msg(b'1', &[]));
    assert!(matches!(s.done()[0].1, Err(PgError::Protocol(_))));
}

#[test]
fn a_query_response_during_authentication_is_refused() {
    let mut s = Script::new(PgConfig::new("postgres"));
    s.sent();
    s.server(&ready(b'I'));
    assert!(s.closed().to_string().contains("during authentication"));
}

#[test]
fn an_unknown_transaction_status_is_a_protocol_error() {
    let mut s = Script::ready();
    s.conn.query(s.now, "").unwrap();
    s.server(&[msg(b'I', &[]), ready(b'?')].concat());
    assert!(matches!(s.done()[0].1, Err(PgError::Protocol(_))));
}

#[test]
fn malformed_error_fields_are_a_protocol_error() {
    let mut s = Script::ready();
    s.server(&msg(b'E', b"Mno terminator"));
    assert!(matches!(s.closed(), PgError::Protocol(_)));
}

/// The server's answer to the first `SELECT $1` with 7: the statement prepared and
/// described, then one row.
fn prepared_select_7() -> Vec<u8> {
    [
        msg(b'1', &[]),
        msg(b't', &[0, 1, 0, 0, 0, 23]),
        row_description(&[("?column?", 23, 0)]),
        msg(b'2', &[]),
        data_row(&[Some(&7i32.to_be_bytes())]),
        command_complete("SELECT 1"),
        ready(b'I'),
    ]
    .concat()
}

// ---- queries ----

#[test]
fn an_extended_query_is_parse_describe_bind_execute_sync_then_bind_only() {
    let mut s = Script::ready();
    let first = s
        .conn
        .execute(s.now, "SELECT $1", &[Value::Int4(7)])
        .unwrap();
    let name = cstr("effectful_s1");
    let parse = frontend(
        b'P',
        &[name.clone(), cstr("SELECT $1"), vec![0, 1, 0, 0, 0, 23]].concat(),
    );
    let describe = frontend(b'D', &[vec![b'S'], name.clone()].concat());
    // portal "", statement, one format code (binary), one value (4 bytes: 7), one
    // result format code (binary)
    let bind = frontend(
        b'B',
        &[
            vec![0],
            name.clone(),
            vec![0, 1, 0, 1, 0, 1, 0, 0, 0, 4, 0, 0, 0, 7, 0, 1, 0, 1],
        ]
        .concat(),
    );
    let execute = frontend(b'E', &[0, 0, 0, 0, 0]);
    let sync = frontend(b'S', &[]);
    assert_eq!(
        s.sent(),
        [parse, describe, bind.clone(), execute.clone(), sync.clone()].concat()
    );

    s.server(&prepared_select_7());
    let done = s.done();
    assert_eq!(done[0].0, first);
    let sets = done[0].1.as_ref().unwrap();
    assert_eq!(sets[0].rows[0].get::<i32, _>(0).unwrap(), 7);

    let second = s
        .conn
        .execute(s.now, "SELECT $1", &[Value::Int4(7)])
        .unwrap();
    assert_eq!(
        s.sent(),
        [bind, execute, sync].concat(),
        "cached: Bind only"
    );
    s.server(
        &[
            msg(b'2', &[]),
            data_row(&[Some(&7i32.to_be_bytes())]),
            command_complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let done = s.done();
    assert_eq!(done[0].0, second);
    assert_eq!(
        done[0].1.as_ref().unwrap()[0].rows[0]
            .get::<i32, _>(0)
            .unwrap(),
        7
    );
}

#[test]
fn a_null_parameter_leaves_its_type_to_the_server() {
    let mut s = Script::ready();
    s.conn.execute(s.now, "SELECT $1", &[Value::Null]).unwrap();
    let sent = s.sent();
    let parse = frontend(
        b'P',
        &[
            cstr("effectful_s1"),
            cstr("SELECT $1"),
            vec![0, 1, 0, 0, 0, 0],
        ]
        .concat(),
    );
    assert!(sent.starts_with(&parse));
    // In Bind: a NULL is length -1 with no bytes.
    assert!(sent.windows(4).any(|w| w == [0xff, 0xff, 0xff, 0xff]));
}

#[test]
fn a_parameter_that_cannot_be_encoded_is_refused_and_nothing_is_sent() {
    let mut s = Script::ready();
    let err = s
        .conn
        .execute(s.now, "SELECT $1", &[Value::Numeric("12e3".into())])
        .unwrap_err();
    assert!(err.to_string().contains("parameter $1"), "{err}");
    assert!(s.sent().is_empty());
    assert_eq!(s.conn.in_flight(), 0);
    assert_eq!(s.conn.cached_statements(), 0);
    let err = s
        .conn
        .execute(
            s.now,
            "SELECT $1",
            &[Value::Array {
                element: effectful::postgres::Type::INT4,
                items: vec![Value::Text("x".into())],
            }],
        )
        .unwrap_err();
    assert!(err.to_string().contains("cannot hold"), "{err}");
}

#[test]
fn an_sql_text_with_a_nul_is_refused_without_touching_the_cache_or_the_wire() {
    // A cache of one, full: a refused text must not evict what it holds.
    let mut s = Script::new(
        PgConfig::new("postgres")
            .database("test")
            .statement_cache_size(1),
    );
    s.sent();
    s.server(&[auth_ok(), startup_tail()].concat());
    assert!(matches!(s.events()[..], [Event::Ready]));
    s.conn
        .execute(s.now, "SELECT $1", &[Value::Int4(7)])
        .unwrap();
    s.sent();
    s.server(&prepared_select_7());
    assert!(s.done()[0].1.is_ok());

    let err = s
        .conn
        .execute(s.now, "SELECT $1\0", &[Value::Int4(7)])
        .unwrap_err();
    assert!(err.to_string().contains("NUL byte"), "{err}");
    assert!(s.sent().is_empty(), "nothing is sent for a refused text");
    assert_eq!(s.conn.in_flight(), 0);
    assert_eq!(s.conn.cached_statements(), 1);

    s.conn
        .execute(s.now, "SELECT $1", &[Value::Int4(7)])
        .unwrap();
    let sent = s.sent();
    assert_eq!(sent[0], b'B', "still cached: Bind only, no Close, no Parse");
}

#[test]
fn seventeen_parameters_have_their_seventeen_types_in_the_parse() {
    let mut s = Script::ready();
    let sql = (1..=17)
        .map(|i| format!("${i}::int4"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {sql}");
    let params: Vec<Value> = (0..17).map(Value::Int4).collect();
    s.conn.execute(s.now, &sql, &params).unwrap();
    let mut types = 17u16.to_be_bytes().to_vec();
    for _ in 0..17 {
        types.extend_from_slice(&23u32.to_be_bytes());
    }
    let parse = frontend(b'P', &[cstr("effectful_s1"), cstr(&sql), types].concat());
    assert!(s.sent().starts_with(&parse));
}

#[test]
fn pipelined_queries_complete_in_order_and_an_error_fails_only_its_own() {
    let mut s = Script::ready();
    let a = s.conn.query(s.now, "SELECT 1").unwrap();
    let b = s.conn.query(s.now, "SELEC").unwrap();
    let c = s.conn.query(s.now, "SELECT 3").unwrap();
    assert_eq!(s.conn.in_flight(), 3);
    let one = |v: &'static [u8]| {
        [
            row_description(&[("x", 23, 0)]),
            data_row(&[Some(v)]),
            command_complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat()
    };
    s.server(
        &[
            one(b"1"),
            error(
                "ERROR",
                "42601",
                "syntax error at or near \"SELEC\"",
                &[(b'P', "1")],
            ),
            ready(b'I'),
            one(b"3"),
        ]
        .concat(),
    );
    let done = s.done();
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![a, b, c]);
    assert_eq!(
        done[0].1.as_ref().unwrap()[0].rows[0]
            .get::<i32, _>(0)
            .unwrap(),
        1
    );
    let err = done[1].1.as_ref().unwrap_err();
    assert_eq!(err.code(), Some("42601"));
    assert_eq!(err.as_db().unwrap().position, Some(1));
    assert_eq!(
        done[2].1.as_ref().unwrap()[0].rows[0]
            .get::<String, _>(0)
            .unwrap(),
        "3"
    );
}

#[test]
fn a_fatal_error_fails_every_query_in_flight_and_closes() {
    let mut s = Script::ready();
    let a = s.conn.query(s.now, "SELECT 1").unwrap();
    let b = s.conn.query(s.now, "SELECT 2").unwrap();
    s.server(&error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
        &[],
    ));
    let events = s.events();
    assert_eq!(events.len(), 3);
    for (event, id) in events.iter().zip([a, b]) {
        match event {
            Event::Done {
                id: done,
                result: Err(e),
            } => {
                assert_eq!(*done, id);
                assert_eq!(e.code(), Some("57P01"));
                assert!(e.is_retryable());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(events[2], Event::Closed(_)));
    assert!(s.conn.query(s.now, "SELECT 3").is_err());
}

#[test]
fn an_error_with_nothing_in_flight_closes_the_connection() {
    let mut s = Script::ready();
    s.server(&error(
        "FATAL",
        "57P05",
        "terminating connection due to idle-session timeout",
        &[],
    ));
    assert_eq!(s.closed().code(), Some("57P05"));
}

#[test]
fn the_socket_closing_fails_queries_in_flight_as_retryable() {
    let mut s = Script::ready();
    let id = s.conn.query(s.now, "SELECT 1").unwrap();
    s.conn.handle_eof(s.now);
    let events = s.events();
    assert!(
        matches!(&events[0], Event::Done { id: d, result: Err(PgError::Closed(ClosedReason::ServerHungUp)) } if *d == id)
    );
    assert!(matches!(events[1], Event::Closed(_)));
    assert!(PgError::Closed(ClosedReason::ServerHungUp).is_retryable());
}

#[test]
fn queries_submitted_during_startup_are_sent_when_it_finishes() {
    let mut s = Script::new(PgConfig::new("postgres"));
    s.sent();
    let id = s.conn.query(s.now, "SELECT 1").unwrap();
    assert!(s.sent().is_empty(), "held until ReadyForQuery");
    s.server(&[auth_ok(), startup_tail()].concat());
    assert_eq!(s.sent(), frontend(b'Q', &cstr("SELECT 1")));
    s.server(&[command_complete("SELECT 0"), ready(b'I')].concat());
    assert_eq!(s.done()[0].0, id);
}

#[test]
fn a_failed_startup_fails_the_queries_waiting_for_it() {
    let mut s = Script::new(PgConfig::new("nobody"));
    s.sent();
    let id = s.conn.query(s.now, "SELECT 1").unwrap();
    s.server(&error(
        "FATAL",
        "28000",
        "role \"nobody\" does not exist",
        &[],
    ));
    let events = s.events();
    assert!(
        matches!(&events[0], Event::Done { id: d, result: Err(e) } if *d == id && e.code() == Some("28000"))
    );
    assert!(matches!(events[1], Event::Closed(_)));
    assert!(s.sent().is_empty());
}

#[test]
fn the_connect_timeout_fails_a_startup_that_does_not_finish() {
    let mut s = Script::new(PgConfig::new("postgres").connect_timeout(Duration::from_secs(5)));
    s.sent();
    assert_eq!(s.conn.poll_timeout(), Some(Time::from_secs(5)));
    s.conn.handle_timeout(Time::from_secs(4));
    assert!(s.events().is_empty(), "an early timeout does nothing");
    s.conn.handle_timeout(Time::from_secs(5));
    assert_eq!(s.closed(), PgError::ConnectTimeout(Duration::from_secs(5)));
    assert_eq!(s.conn.poll_timeout(), None);
}

#[test]
fn the_command_timeout_asks_once_for_a_cancel_of_the_head_query_only() {
    let mut s = Script::ready();
    let a = s
        .conn
        .query(Time::from_secs(100), "SELECT pg_sleep(100)")
        .unwrap();
    let _b = s.conn.query(Time::from_secs(101), "SELECT 2").unwrap();
    assert_eq!(s.conn.poll_timeout(), Some(Time::from_secs(160)));
    s.conn.handle_timeout(Time::from_secs(159));
    assert!(s.events().is_empty());
    s.conn.handle_timeout(Time::from_secs(160));
    let events = s.events();
    assert!(
        matches!(&events[..], [Event::CancelDue { id, cancel }] if *id == a && cancel.process_id() == 4242)
    );
    assert_eq!(s.conn.poll_timeout(), None, "asked once per query");
    // When the head finishes, the next query's clock starts then.
    s.now = Time::from_secs(170);
    s.server(
        &[
            error(
                "ERROR",
                "57014",
                "canceling statement due to user request",
                &[],
            ),
            ready(b'I'),
        ]
        .concat(),
    );
    assert_eq!(s.done()[0].1.as_ref().unwrap_err().code(), Some("57014"));
    assert_eq!(s.conn.poll_timeout(), Some(Time::from_secs(230)));
}

#[test]
fn a_result_above_the_limit_fails_alone_and_the_connection_goes_on() {
    let mut s = Script::new(PgConfig::new("postgres").max_result_bytes(100));
    s.sent();
    s.server(&[auth_ok(), startup_tail()].concat());
    s.events();
    let big = s.conn.query(s.now, "SELECT big").unwrap();
    let small = s.conn.query(s.now, "SELECT small").unwrap();
    let row = [b'x'; 60];
    s.server(
        &[
            row_description(&[("b", 25, 0)]),
            data_row(&[Some(&row)]),
            data_row(&[Some(&row)]),
            data_row(&[Some(&row)]),
            command_complete("SELECT 3"),
            ready(b'I'),
            row_description(&[("s", 25, 0)]),
            data_row(&[Some(b"ok")]),
            command_complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let done = s.done();
    assert_eq!(done[0].0, big);
    assert_eq!(
        done[0].1.as_ref().unwrap_err(),
        &PgError::ResultTooLarge { limit: 100 }
    );
    assert_eq!(done[1].0, small);
    assert!(done[1].1.is_ok());
}

#[test]
fn the_in_flight_limit_refuses_more_queries() {
    let mut s = Script::new(PgConfig::new("postgres").max_in_flight(2));
    s.conn.query(s.now, "SELECT 1").unwrap();
    s.conn.query(s.now, "SELECT 2").unwrap();
    let err = s.conn.query(s.now, "SELECT 3").unwrap_err();
    assert_eq!(err, PgError::PipelineFull { limit: 2 });
    assert!(err.is_retryable());
}

#[test]
fn copy_from_stdin_is_refused_with_copy_fail() {
    let mut s = Script::ready();
    s.conn.query(s.now, "COPY t FROM STDIN").unwrap();
    s.sent();
    s.server(&msg(b'G', &[0, 0, 0]));
    let sent = s.sent();
    assert_eq!(sent[0], b'f', "CopyFail");
    s.server(
        &[
            error("ERROR", "57014", "COPY from stdin failed", &[]),
            ready(b'I'),
        ]
        .concat(),
    );
    assert_eq!(
        s.done()[0].1.as_ref().unwrap_err(),
        &PgError::CopyUnsupported
    );
}

#[test]
fn notifications_and_notices_arrive_between_queries() {
    let mut s = Script::ready();
    let mut body = 77i32.to_be_bytes().to_vec();
    body.extend_from_slice(&cstr("jobs"));
    body.extend_from_slice(&cstr("42"));
    s.server(&msg(b'A', &body));
    s.server(&msg(
        b'N',
        &error_fields("WARNING", "01000", "careful", &[]),
    ));
    s.server(&parameter_status("TimeZone", "UTC"));
    let events = s.events();
    assert!(
        matches!(&events[0], Event::Notification(n) if n.process_id == 77 && n.channel == "jobs" && n.payload == "42")
    );
    assert!(
        matches!(&events[1], Event::Notice(n) if n.message == "careful" && n.severity == "WARNING")
    );
    assert_eq!(s.conn.parameter("TimeZone"), Some("UTC"));
}

#[test]
fn transaction_status_comes_from_ready_for_query() {
    let mut s = Script::ready();
    for (status, expected) in [
        (b'T', TransactionStatus::InTransaction),
        (b'E', TransactionStatus::Failed),
        (b'I', TransactionStatus::Idle),
    ] {
        s.conn.query(s.now, "x").unwrap();
        s.server(&[command_complete("X"), ready(status)].concat());
        s.events();
        assert_eq!(s.conn.transaction_status(), expected);
    }
}

#[test]
fn close_sends_terminate_and_fails_what_is_in_flight() {
    let mut s = Script::ready();
    let id = s.conn.query(s.now, "SELECT 1").unwrap();
    s.sent();
    s.conn.close(s.now);
    assert_eq!(s.sent(), frontend(b'X', &[]));
    let events = s.events();
    assert!(
        matches!(&events[0], Event::Done { id: d, result: Err(PgError::Closed(ClosedReason::ByClient)) } if *d == id)
    );
    s.server(&ready(b'I'));
    assert!(s.events().is_empty(), "a closed connection ignores input");
}

#[test]
fn a_hostile_array_length_is_refused_without_allocating() {
    let mut s = Script::ready();
    s.conn.execute(s.now, "SELECT a", &[]).unwrap();
    // One dimension declaring 2^31-1 items, with no items present.
    let mut array = 1i32.to_be_bytes().to_vec();
    array.extend_from_slice(&0i32.to_be_bytes());
    array.extend_from_slice(&23u32.to_be_bytes());
    array.extend_from_slice(&i32::MAX.to_be_bytes());
    array.extend_from_slice(&1i32.to_be_bytes());
    s.server(
        &[
            msg(b'1', &[]),
            row_description(&[("a", 1007, 0)]),
            msg(b'2', &[]),
            data_row(&[Some(&array)]),
            command_complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let sets = s.done().remove(0).1.unwrap();
    let err = sets[0].rows[0].get::<Vec<i32>, _>(0).unwrap_err();
    assert!(err.to_string().contains("items declared"), "{err}");
    assert!(sets[0].rows[0].get::<Value, _>(0).is_err());
}
