//! The script runner's own behaviour: matching, failures and their messages, time.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use effectful::effect::*;
use effectful::{
    Cx, EffectError, EngineConfig, ErrorKind, Event, Fx, Program, ProgramError, Time, Timestamp,
    decode, join, race,
};
use effectful_test::script::{Script, ScriptFailure, assert_script, assert_script_program};
use uuid::Uuid;

const MS: Duration = Duration::from_millis(1);

fn user(n: u128) -> User {
    User {
        id: Uuid::from_u128(n),
        email: format!("user{n}@example.com"),
        name: format!("User {n}"),
    }
}

/// Looks a user up and says hello to them.
async fn greet(fx: Fx, user_id: Uuid) -> Result<String, EffectError> {
    let name = match fx.perform(GetUserById { user_id }).await? {
        UserLookup::Found(user) => user.name,
        UserLookup::NotFound { .. } => "stranger".to_string(),
    };
    fx.perform(SendText {
        text: format!("hello {name}"),
    })
    .await?;
    Ok(name)
}

fn greet_script(user_id: Uuid) -> Script {
    Script::new()
        .expect(GetUserById { user_id })
        .respond(UserLookup::Found(user(1)))
        .expect(SendText {
            text: "hello User 1".into(),
        })
        .respond(())
}

#[test]
fn a_matching_script_passes_and_returns_the_programs_value() {
    let id = Uuid::from_u128(1);
    assert_eq!(
        greet_script(id).run(move |fx| greet(fx, id)),
        Ok(Ok("User 1".to_string()))
    );
}

#[test]
fn an_empty_script_runs_a_program_that_asks_for_nothing() {
    assert_eq!(Script::new().run(|_fx: Fx| async { 42 }), Ok(42));
}

#[test]
fn a_wrong_request_fails_with_a_diff_naming_both() {
    let id = Uuid::from_u128(1);
    let script = Script::new()
        .expect(GetUserById { user_id: id })
        .respond(UserLookup::Found(user(1)))
        .expect(SendText {
            text: "hi User 1".into(),
        })
        .respond(());
    let failure = script.run(move |fx| greet(fx, id)).unwrap_err();
    let ScriptFailure::Mismatch {
        step,
        expected,
        got,
        ref others,
        ref diff,
    } = failure
    else {
        panic!("expected a mismatch, got {failure:?}");
    };
    assert_eq!(
        (step, expected, got),
        (2, "WebSocket.SendText", "WebSocket.SendText")
    );
    assert!(others.is_empty());
    assert!(
        diff.contains(
            "-             text: \"hi User 1\",\n+             text: \"hello User 1\",\n"
        ),
        "{diff}"
    );
    assert!(
        diff.contains("  WebSocket(\n"),
        "common lines are kept: {diff}"
    );
    let message = failure.to_string();
    assert!(
        message.starts_with(
            "step 2 expects WebSocket.SendText, but the program asked for WebSocket.SendText"
        ),
        "{message}"
    );
    assert!(message.contains("--- expected\n+++ got\n"), "{message}");
}

/// A name 8 MiB long, so that the greeting is a 16 MiB record.
fn huge_user(n: u128) -> User {
    User {
        name: "n".repeat(8 << 20),
        ..user(n)
    }
}

#[test]
fn a_mismatch_on_a_huge_request_shows_a_bounded_excerpt_around_the_difference() {
    let id = Uuid::from_u128(1);
    let huge = huge_user(1);
    let script = Script::new()
        .expect(GetUserById { user_id: id })
        .respond(UserLookup::Found(huge.clone()))
        .expect(SendText {
            text: format!("hello {}!", huge.name),
        })
        .respond(());
    let message = script.run(move |fx| greet(fx, id)).unwrap_err().to_string();
    assert!(message.len() < 2_000, "a {} byte message", message.len());
    // Both sides are shown where they differ: the expected `!` against the end quote.
    assert!(
        message.contains("- [") && message.contains("nnnn!\","),
        "{message}"
    );
    assert!(
        message.contains("+ [") && message.contains("nnnn\","),
        "{message}"
    );
    assert!(message.contains("bytes cut]"), "{message}");
}

#[test]
fn a_huge_request_after_the_last_step_is_quoted_in_a_bounded_excerpt() {
    let id = Uuid::from_u128(1);
    let script = Script::new()
        .expect(GetUserById { user_id: id })
        .respond(UserLookup::Found(huge_user(1)));
    let failure = script.run(move |fx| greet(fx, id)).unwrap_err();
    assert!(
        matches!(failure, ScriptFailure::Exhausted { .. }),
        "{failure:?}"
    );
    let message = failure.to_string();
    assert!(message.len() < 2_000, "a {} byte message", message.len());
    assert!(message.contains("text: \"hello nnnn"), "{message}");
}

#[test]
fn a_request_of_another_effect_names_both_effects() {
    let id = Uuid::from_u128(1);
    let script = Script::new()
        .expect(ListUsers {
            limit: 10,
            offset: 0,
        })
        .respond(vec![]);
    let failure = script.run(move |fx| greet(fx, id)).unwrap_err();
    let message = failure.to_string();
    assert!(
        message.starts_with(
            "step 1 expects Database.ListUsers, but the program asked for Database.GetUserById"
        ),
        "{message}"
    );
    assert!(
        message.contains("-     ListUsers(") && message.contains("+     GetUserById("),
        "{message}"
    );
}

#[test]
fn a_script_with_steps_left_fails_as_not_used_up() {
    let id = Uuid::from_u128(1);
    let script = greet_script(id)
        .expect(GetCurrentTime {})
        .respond(Timestamp::UNIX_EPOCH)
        .expect(GenerateUuid {})
        .respond(Uuid::nil());
    let failure = script.run(move |fx| greet(fx, id)).unwrap_err();
    assert!(
        matches!(
            failure,
            ScriptFailure::Unused {
                left: 2,
                step: 3,
                expected: "System.GetCurrentTime",
                ..
            }
        ),
        "{failure:?}"
    );
    let message = failure.to_string();
    assert!(
        message.starts_with(
            "script not used up: 2 steps left, next: step 3 expects System.GetCurrentTime"
        ),
        "{message}"
    );
}

#[test]
fn a_request_after_the_last_step_fails_as_the_script_used_up() {
    let id = Uuid::from_u128(1);
    let script = Script::new()
        .expect(GetUserById { user_id: id })
        .respond(UserLookup::Found(user(1)));
    let failure = script.run(move |fx| greet(fx, id)).unwrap_err();
    assert!(
        matches!(
            failure,
            ScriptFailure::Exhausted {
                steps: 1,
                got: "WebSocket.SendText",
                ..
            }
        ),
        "{failure:?}"
    );
    let message = failure.to_string();
    assert!(
        message.starts_with(
            "the program asked for WebSocket.SendText but the script is used up after 1 steps"
        ),
        "{message}"
    );
    assert!(
        message.contains("hello User 1"),
        "the request is shown: {message}"
    );
}

#[test]
fn a_failed_step_reaches_the_program_as_an_error() {
    let id = Uuid::from_u128(1);
    let down = EffectError::connection_lost("Database.GetUserById", "connection refused");
    let script = Script::new()
        .expect(GetUserById { user_id: id })
        .fail(down.clone());
    assert_eq!(script.run(move |fx| greet(fx, id)), Ok(Err(down)));
}

#[test]
fn a_raw_response_to_another_effect_is_a_protocol_error_in_the_program() {
    let id = Uuid::from_u128(1);
    let wrong = Response::System(SystemResponse::GenerateUuid(Uuid::nil()));
    let script = Script::new()
        .expect(GetUserById { user_id: id })
        .respond_raw(wrong);
    let err = script.run(move |fx| greet(fx, id)).unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Protocol);
}

#[test]
fn an_answer_slower_than_the_timeout_is_cancelled_and_the_program_sees_a_timeout() {
    let script = Script::new()
        .expect(GetCurrentTime {})
        .after(100 * MS)
        .respond(Timestamp::UNIX_EPOCH);
    let run = script
        .play(|fx: Fx| async move { fx.perform_timeout(GetCurrentTime {}, 50 * MS).await })
        .unwrap();
    assert_eq!(run.output.unwrap_err().kind, ErrorKind::Timeout);
    assert_eq!(run.cancelled, vec![Request::from(GetCurrentTime {})]);
    assert_eq!(run.elapsed, 50 * MS);
}

#[test]
fn an_answer_as_slow_as_the_timeout_loses_to_it() {
    let script = Script::new()
        .expect(GetCurrentTime {})
        .after(50 * MS)
        .respond(Timestamp::UNIX_EPOCH);
    let output = script
        .run(|fx: Fx| async move { fx.perform_timeout(GetCurrentTime {}, 50 * MS).await })
        .unwrap();
    assert_eq!(output.unwrap_err().kind, ErrorKind::Timeout);
}

#[test]
fn an_answer_faster_than_the_timeout_arrives_after_its_delay() {
    let script = Script::new()
        .expect(GetCurrentTime {})
        .after(30 * MS)
        .respond(Timestamp::from_unix_secs(9));
    let run = script
        .play(|fx: Fx| async move {
            let stamp = fx.perform_timeout(GetCurrentTime {}, 50 * MS).await?;
            Ok::<_, EffectError>((stamp, fx.now()))
        })
        .unwrap();
    assert_eq!(
        run.output,
        Ok((Timestamp::from_unix_secs(9), Time::from_millis(30)))
    );
    assert!(run.cancelled.is_empty());
    assert_eq!(run.elapsed, 30 * MS);
}

#[test]
fn a_never_answered_effect_is_cancelled_when_the_program_gives_up_on_it() {
    let script = Script::new().expect(ReceiveText {}).never();
    let run = script
        .play(|fx: Fx| async move {
            fx.timeout(Duration::from_secs(30), fx.perform(ReceiveText {}))
                .await
        })
        .unwrap();
    assert!(run.output.is_err(), "the timeout fired");
    assert_eq!(run.cancelled, vec![Request::from(ReceiveText {})]);
    assert_eq!(run.elapsed, Duration::from_secs(30));
}

#[test]
fn a_never_answered_effect_without_a_timeout_leaves_the_program_stuck() {
    let script = Script::new().expect(ReceiveText {}).never();
    let failure = script
        .run(|fx: Fx| async move { fx.perform(ReceiveText {}).await })
        .unwrap_err();
    assert_eq!(
        failure,
        ScriptFailure::Stuck {
            steps: 1,
            waiting: vec!["WebSocket.ReceiveText"]
        }
    );
    assert!(
        failure.to_string().contains("give it a timeout"),
        "{failure}"
    );
}

#[test]
fn the_program_deadline_from_the_config_ends_a_waiting_program_as_an_error() {
    let config = EngineConfig {
        program_timeout: Some(Duration::from_secs(300)),
        ..EngineConfig::default()
    };
    let script = Script::new().config(config).expect(ReceiveText {}).never();
    let failure = script
        .run(|fx: Fx| async move { fx.perform(ReceiveText {}).await })
        .unwrap_err();
    assert_eq!(
        failure,
        ScriptFailure::Program {
            steps: 1,
            error: ProgramError::DeadlineExceeded {
                deadline: Time::from_secs(300)
            }
        }
    );
    assert!(
        failure
            .to_string()
            .starts_with("the program ended with an error after 1 steps: program deadline"),
        "{failure}"
    );
}

#[test]
fn joined_effects_are_answered_in_script_order_whatever_the_request_order() {
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let script = Script::new()
        .expect(GetUserById { user_id: b })
        .respond(UserLookup::Found(user(2)))
        .expect(GetUserById { user_id: a })
        .respond(UserLookup::Found(user(1)));
    let order = Rc::new(RefCell::new(Vec::new()));
    let seen = order.clone();
    let names = script
        .run(move |fx: Fx| async move {
            let lookup = |user_id| {
                let (fx, seen) = (fx.clone(), seen.clone());
                async move {
                    let found = fx.perform(GetUserById { user_id }).await;
                    seen.borrow_mut().push(user_id);
                    found
                }
            };
            let (first, second) = join(lookup(a), lookup(b)).await;
            (first, second)
        })
        .unwrap();
    assert_eq!(
        names,
        (
            Ok(UserLookup::Found(user(1))),
            Ok(UserLookup::Found(user(2)))
        )
    );
    assert_eq!(
        *order.borrow(),
        vec![b, a],
        "b was answered first, as scripted"
    );
}

#[test]
fn the_loser_of_a_race_needs_a_step_and_is_cancelled() {
    let script = Script::new()
        .expect(ReceiveText {})
        .after(10 * MS)
        .respond("hi".into())
        .expect(GetCurrentTime {})
        .never();
    let run = script
        .play(|fx: Fx| async move {
            race(fx.perform(ReceiveText {}), fx.perform(GetCurrentTime {})).await
        })
        .unwrap();
    assert!(
        matches!(run.output, effectful::Either::Left(Ok(ref text)) if text == "hi"),
        "{:?}",
        run.output
    );
    assert_eq!(run.cancelled, vec![Request::from(GetCurrentTime {})]);

    let unscripted = Script::new()
        .expect(ReceiveText {})
        .after(10 * MS)
        .respond("hi".into());
    let failure = unscripted.run(|fx: Fx| async move {
        race(fx.perform(ReceiveText {}), fx.perform(GetCurrentTime {})).await
    });
    assert!(
        matches!(
            failure,
            Err(ScriptFailure::Exhausted {
                got: "System.GetCurrentTime",
                ..
            })
        ),
        "{failure:?}"
    );
}

#[test]
fn a_mismatch_lists_the_other_outstanding_requests() {
    let script = Script::new().expect(GenerateUuid {}).respond(Uuid::nil());
    let failure = script
        .run(|fx: Fx| async move {
            join(fx.perform(GetCurrentTime {}), fx.perform(ReceiveText {})).await
        })
        .unwrap_err();
    let message = failure.to_string();
    assert!(
        message
            .contains("asked for System.GetCurrentTime (also outstanding: WebSocket.ReceiveText)"),
        "{message}"
    );
}

/// Asks for the time twice, one request after the other, and adds the two.
struct TwoClocks {
    sum: i64,
}

impl Program for TwoClocks {
    type Output = Result<i64, EffectError>;

    fn resume(&mut self, cx: &mut Cx<'_>, event: Event) -> Poll<Self::Output> {
        let result = match event {
            Event::Start => {
                cx.perform(GetCurrentTime {});
                return Poll::Pending;
            }
            Event::Response { result, .. } => result.and_then(decode::<Std, GetCurrentTime>),
            Event::Timer { .. } => return Poll::Pending,
        };
        match result {
            Err(error) => Poll::Ready(Err(error)),
            Ok(stamp) if self.sum == 0 => {
                self.sum = stamp.unix_micros();
                cx.perform(GetCurrentTime {});
                Poll::Pending
            }
            Ok(stamp) => Poll::Ready(Ok(self.sum + stamp.unix_micros())),
        }
    }
}

#[test]
fn a_hand_written_program_runs_against_a_script() {
    let script = Script::new()
        .expect(GetCurrentTime {})
        .respond(Timestamp::from_unix_micros(2))
        .expect(GetCurrentTime {})
        .respond(Timestamp::from_unix_micros(3));
    assert_eq!(assert_script_program(script, TwoClocks { sum: 0 }), Ok(5));
}

#[test]
#[should_panic(
    expected = "scripted run failed: script not used up: 1 step left, next: step 1 expects System.GenerateUuid"
)]
fn assert_script_panics_with_the_failure_message() {
    let script = Script::new().expect(GenerateUuid {}).respond(Uuid::nil());
    assert_script(script, |_fx: Fx| async {});
}
