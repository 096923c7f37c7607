//! Properties: frames decode the same however they are split, values survive an
//! encode/decode round trip, and a connection matches every reply exactly once, in
//! order, with pushes interleaved anywhere.

use effectful::Time;
use effectful::redis::{Event, FrameDecoder, Limits, ProtocolError, ServerError, Value};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::support::{cmd, encode, encoded, events, resp3};

fn line_text() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

fn resp2_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        line_text().prop_map(Value::Simple),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bulk),
        any::<i64>().prop_map(Value::Int),
        "[A-Z]{1,9} [ -~]{0,12}".prop_map(|t| Value::Error(ServerError::parse(&t))),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop::collection::vec(inner, 0..5).prop_map(Value::Array)
    })
}

fn resp3_value() -> impl Strategy<Value = Value> {
    let double = prop_oneof![
        any::<f64>().prop_filter("NaN is not equal to itself", |d| !d.is_nan()),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ];
    let leaf = prop_oneof![
        Just(Value::Nil),
        line_text().prop_map(Value::Simple),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bulk),
        any::<i64>().prop_map(Value::Int),
        double.prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        "-?[0-9]{1,40}".prop_map(Value::BigNumber),
        (
            prop_oneof![Just("txt"), Just("mkd")],
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(f, text)| Value::Verbatim {
                format: f.to_owned(),
                text
            }),
        "[A-Z]{1,9} [ -~]{0,12}".prop_map(|t| Value::Error(ServerError::parse(&t))),
    ];
    // Map keys and set members are bulk strings: the decoder hashes them.
    let key = prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bulk);
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(key.clone(), 0..5).prop_map(Value::Set),
            prop::collection::vec((key.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            prop::collection::vec(inner, 1..4).prop_map(Value::Push),
        ]
    })
}

/// Feeds `chunks` one after another, decoding as a connection would.
fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Value>, Option<ProtocolError>) {
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut buf = Vec::new();
    let mut values = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&buf) {
                Ok(Some((value, used))) => {
                    values.push(value);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (values, Some(e)),
            }
        }
    }
    (values, None)
}

fn split<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for p in points {
        chunks.push(&bytes[at..p]);
        at = p;
    }
    chunks.push(&bytes[at..]);
    chunks
}

proptest! {
    #[test]
    fn resp2_values_round_trip(value in resp2_value()) {
        let (values, error) = decode_chunks([encoded(&value, true).as_slice()]);
        prop_assert_eq!(error, None);
        prop_assert_eq!(values, vec![value]);
    }

    #[test]
    fn resp3_values_round_trip(value in resp3_value()) {
        let (values, error) = decode_chunks([encoded(&value, false).as_slice()]);
        prop_assert_eq!(error, None);
        prop_assert_eq!(values, vec![value]);
    }

    #[test]
    fn frames_split_anywhere_decode_the_same(
        values in prop::collection::vec(resp3_value(), 1..6),
        resp2 in prop::collection::vec(resp2_value(), 0..3),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for v in &values {
            encode(v, false, &mut bytes);
        }
        for v in &resp2 {
            encode(v, true, &mut bytes);
        }
        let whole = decode_chunks([bytes.as_slice()]);
        let pieces = decode_chunks(split(&bytes, &cuts));
        let bytewise = decode_chunks(bytes.chunks(1));
        prop_assert_eq!(whole.1.clone(), None);
        prop_assert_eq!(whole.0.len(), values.len() + resp2.len());
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(&bytewise, &whole);
    }

    #[test]
    fn any_bytes_split_anywhere_give_the_same_outcome(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"+-:$*_,#(=!%~>|\r\n0123456789-?tf".to_vec()),
                1 => any::<u8>(),
            ],
            0..64,
        ),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let whole = decode_chunks([bytes.as_slice()]);
        prop_assert_eq!(decode_chunks(split(&bytes, &cuts)), whole.clone());
        prop_assert_eq!(decode_chunks(bytes.chunks(1)), whole);
    }

    #[test]
    fn every_command_gets_its_reply_once_in_order_with_pushes_anywhere(
        replies in prop::collection::vec(
            resp3_value().prop_filter("a top-level push is not a reply", |v| !matches!(v, Value::Push(_))),
            1..12,
        ),
        pushes_before in prop::collection::vec(0usize..3, 12),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut conn = resp3();
        let ids: Vec<_> = replies
            .iter()
            .map(|_| conn.send(Time::ZERO, &cmd(&["GET", "k"])).expect("room"))
            .collect();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (i, (reply, id)) in replies.iter().zip(&ids).enumerate() {
            for n in 0..pushes_before[i] {
                let payload = format!("m{i}.{n}");
                let push = Value::Push(vec![
                    Value::Bulk(b"message".to_vec()),
                    Value::Bulk(b"ch".to_vec()),
                    Value::Bulk(payload.clone().into_bytes()),
                ]);
                encode(&push, false, &mut wire);
                expected.push(Event::Message(effectful::redis::Message {
                    kind: effectful::redis::SubscriptionKind::Channel,
                    pattern: None,
                    channel: b"ch".to_vec(),
                    payload: payload.into_bytes(),
                }));
            }
            encode(reply, false, &mut wire);
            let result = match reply {
                Value::Error(e) => Err(effectful::redis::CommandError::Server(e.clone())),
                v => Ok(v.clone()),
            };
            expected.push(Event::Reply { id: *id, result });
        }
        let mut got = Vec::new();
        for chunk in split(&wire, &cuts) {
            conn.handle_input(Time::ZERO, chunk);
            got.extend(events(&mut conn));
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(conn.in_flight(), 0);
        prop_assert!(!conn.is_closed());
    }
}
