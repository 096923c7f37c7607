//! `redis://` URLs: every part, percent-encoding, and errors that never leak a secret.

use effectful::redis::{Protocol, RedisUrl, UrlError};

#[test]
fn a_bare_url_takes_the_defaults() {
    let url = RedisUrl::parse("redis://localhost").unwrap();
    assert!(!url.tls());
    assert_eq!((url.host(), url.port(), url.db()), ("localhost", 6379, 0));
    assert_eq!((url.username(), url.password()), (None, None));
    assert_eq!(url.protocol(), None);
    assert_eq!(url.config().protocol, Protocol::Resp3);
}

#[test]
fn every_part_is_read() {
    let url =
        RedisUrl::parse("REDISS://alice:pa%3Ass%2Fw%40rd@10.0.0.5:6380/3?protocol=2").unwrap();
    assert!(url.tls());
    assert_eq!((url.host(), url.port(), url.db()), ("10.0.0.5", 6380, 3));
    assert_eq!(url.username(), Some("alice"));
    assert_eq!(url.password().unwrap().expose(), "pa:ss/w@rd");
    assert_eq!(url.protocol(), Some(Protocol::Resp2));
    let config = url.config();
    assert_eq!((config.db, config.protocol), (3, Protocol::Resp2));
    assert_eq!(config.username.as_deref(), Some("alice"));
}

#[test]
fn a_password_alone_and_a_password_with_colons() {
    let url = RedisUrl::parse("redis://:a:b:c@h/").unwrap();
    assert_eq!(url.username(), None);
    assert_eq!(url.password().unwrap().expose(), "a:b:c");
    assert_eq!(url.db(), 0);
}

#[test]
fn ipv6_hosts_go_in_brackets() {
    let url = RedisUrl::parse("redis://[::1]:7000?db=2").unwrap();
    assert_eq!((url.host(), url.port(), url.db()), ("::1", 7000, 2));
    assert_eq!(url.to_string(), "redis://[::1]:7000/2");
}

#[test]
fn bad_urls_are_refused_with_their_reason() {
    let cases = [
        ("http://h", UrlError::Scheme),
        ("localhost:6379", UrlError::Scheme),
        ("redis://", UrlError::MissingHost),
        ("redis://:pw@", UrlError::MissingHost),
        ("redis://h:0", UrlError::Port),
        ("redis://h:65536", UrlError::Port),
        ("redis://h:", UrlError::Port),
        ("redis://h:x", UrlError::Port),
        ("redis://h/x", UrlError::Db),
        ("redis://h/-1", UrlError::Db),
        ("redis://h/1?db=2", UrlError::Db),
        ("redis://h?protocol=4", UrlError::Protocol),
        ("redis://h?timeout=1", UrlError::UnknownParameter),
        ("redis://h#x", UrlError::Fragment),
        ("redis://user@h", UrlError::UserWithoutPassword),
        ("redis://:bad%zz@h", UrlError::Escape("password")),
        ("redis://:bad%ff@h", UrlError::Escape("password")),
        ("redis://u%4:p@h", UrlError::Escape("user name")),
        ("redis://ho st", UrlError::Host),
        ("redis://[::1", UrlError::Host),
        ("redis://[::1]x", UrlError::Host),
    ];
    for (url, expected) in cases {
        assert_eq!(RedisUrl::parse(url), Err(expected), "{url}");
    }
}

#[test]
fn the_password_never_shows_in_debug_display_or_errors() {
    let url: RedisUrl = "redis://u:hunter2@h:1/2".parse().unwrap();
    assert_eq!(url.to_string(), "redis://u:<redacted>@h:1/2");
    assert!(!format!("{url:?}").contains("hunter2"));
    assert!(!format!("{:?}", url.config()).contains("hunter2"));
    // A password with unencoded / ? # lands in other parts: the errors still never
    // quote it, and say how to encode it.
    for bad in [
        "redis://:hunter2/x@h",
        "redis://:hun?ter2@h",
        "redis://:hun#ter2@h",
        "redis://:hunter2%@h",
    ] {
        let e = RedisUrl::parse(bad).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("ter2"),
                "{text}"
            );
        }
    }
    assert!(
        RedisUrl::parse("redis://:hunter2/x@h")
            .unwrap_err()
            .to_string()
            .contains("%2F")
    );
}
