//! At debug level, the runtime traces a span per program and per effect, with the
//! family, the effect's name, its latency and its outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use effectful::effect::{GenerateUuid, GetCachedValue};
use effectful_tokio::{Runtime, SystemInterpreter};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Writes down every span and event as `name field=value ...`.
#[derive(Clone, Default)]
struct Recorder {
    lines: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicU64>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(format!("span {}", span.metadata().name()));
        span.record(&mut fields);
        self.lines.lock().expect("not poisoned").push(fields.0);
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut fields = Fields("record".to_string());
        values.record(&mut fields);
        self.lines.lock().expect("not poisoned").push(fields.0);
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields("event".to_string());
        event.record(&mut fields);
        self.lines.lock().expect("not poisoned").push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_program_and_each_effect_gets_a_debug_span_with_family_name_latency_and_outcome() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(recorder.clone()).expect("first subscriber");
    let runtime = Runtime::builder()
        .shards(1)
        .seed(3)
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        let handle = runtime.handle().spawn(|fx| async move {
            fx.perform(GenerateUuid {}).await.expect("answered");
            fx.perform(GetCachedValue { key: "k".into() })
                .await
                .is_err()
        });
        handle.await.expect("spawned").await
    });
    assert_eq!(result, Ok(true));
    runtime.shutdown(Duration::ZERO);
    let lines = recorder.lines.lock().expect("not poisoned").join("\n");
    for expected in [
        "seed=3",
        "span program shard=0 program=p0.0",
        "span effect family=System effect=System.GenerateUuid",
        "outcome=ok",
        "span effect family=unhandled effect=Cache.GetCachedValue",
        "outcome=error",
        "record outcome=ok",
        "latency_us=",
    ] {
        assert!(lines.contains(expected), "no {expected:?} in:\n{lines}");
    }
}
