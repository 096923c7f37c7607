//! A program that awaits a tokio future instead of an effect is ended with a clear
//! error at once, even inside a tokio runtime where that future would otherwise wait
//! for a wake-up the engine can never hear.

use std::time::Duration;

use effectful::{Engine, EngineConfig, Output, ProgramError, Time};

#[test]
fn awaiting_a_tokio_sleep_inside_a_runtime_ends_the_program_with_foreign_await() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _inside = runtime.enter();
    let mut engine: Engine<&'static str> = Engine::new(EngineConfig::default());
    engine.spawn_async(Time::ZERO, |_fx| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        "woke up"
    });
    match engine.poll_output() {
        Some(Output::Finished { result, .. }) => {
            assert_eq!(result, Err(ProgramError::ForeignAwait))
        }
        other => panic!("expected the program to end with ForeignAwait, got {other:?}"),
    }
    assert_eq!(engine.programs(), 0);
}
