//! Error reporting to SENTRY_DSN, against a local endpoint that records what
//! arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use effectful::ProgramError;
use effectful_tokio::server::{Settings, init_error_reporting, report_program_error};

/// Accepts HTTP requests on loopback, answers 200 and sends each (request line,
/// body) down the channel.
fn recorder() -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
    let port = listener.local_addr().expect("address").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            if tx.send((line.trim().to_string(), body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn a_failed_program_is_reported_to_the_sentry_dsn_with_environment_and_route() {
    let (port, arrived) = recorder();
    let dsn = format!("http://publickey@127.0.0.1:{port}/42");
    let settings = Settings::from_lookup(|name| match name {
        "SENTRY_DSN" => Some(dsn.clone()),
        "ENVIRONMENT" => Some("test-env".to_string()),
        _ => None,
    })
    .expect("valid settings");
    let guard = init_error_reporting(&settings).expect("reporting starts when SENTRY_DSN is set");
    report_program_error("/orders", &ProgramError::Stalled);
    drop(guard); // sends what is queued

    let (line, body) = arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("nothing reached the local Sentry endpoint within 10 s");
    assert!(line.starts_with("POST /api/42/envelope/"), "{line}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"environment\":\"test-env\""), "{body}");
    assert!(body.contains("\"route\":\"/orders\""), "{body}");
    assert!(body.contains(&ProgramError::Stalled.to_string()), "{body}");
}

#[test]
fn without_a_dsn_nothing_is_set_up() {
    let settings = Settings::from_lookup(|_| None).expect("valid settings");
    assert!(init_error_reporting(&settings).is_none());
    // Reporting is then a no-op (it only logs).
    report_program_error("/orders", &ProgramError::Stalled);
}
