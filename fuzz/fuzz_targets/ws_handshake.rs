//! The bytes of a WebSocket upgrade request come straight from the network: whatever
//! they are, `Acceptor::accept_bytes` answers "need more", an accepted handshake
//! (whose consumed length lies within the input and the limit), or a refusal with an
//! HTTP status, and never panics. The first byte picks the limit.
#![no_main]

use effectful::websocket::Acceptor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, request)) = data.split_first() else {
        return;
    };
    let limit = 64 + usize::from(limit) * 32;
    let acceptor = Acceptor::new()
        .subprotocols(["chat.v2", "chat.v1"])
        .origin_check(|origin| origin != Some("https://evil.example"));
    match acceptor.accept_bytes(request, limit) {
        Ok(None) => assert!(request.len() <= limit, "a request past the limit waits for more"),
        Ok(Some((accepted, consumed))) => {
            assert!(consumed <= request.len() && consumed <= limit);
            assert_eq!(accepted.accept_key.len(), 28, "base64 of a SHA-1");
            let response = accepted.response_bytes();
            assert!(response.starts_with(b"HTTP/1.1 101 "));
        }
        Err(refused) => {
            let status = refused.status();
            assert!((400..500).contains(&status), "{refused}: {status}");
            let response = refused.response_bytes();
            assert!(response.starts_with(b"HTTP/1.1 4"));
        }
    }
});
