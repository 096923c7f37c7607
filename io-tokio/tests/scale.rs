//! 100,000 programs at once across two shards: all finish, none is lost.

use std::time::Duration;

use effectful::EffectError;
use effectful::effect::{GenerateUuid, WaitForShutdown};
use effectful_tokio::{Runtime, SystemInterpreter};

const PROGRAMS: u32 = 100_000;

#[test]
fn a_hundred_thousand_concurrent_programs_on_two_shards_all_finish_and_none_is_lost() {
    let runtime = Runtime::builder()
        .shards(2)
        .seed(1)
        .interpreter("System", |_| SystemInterpreter::new())
        .build()
        .expect("runtime");
    // Every program waits for shutdown, so all of them are running at once.
    let handles = runtime.block_on(async {
        let mut handles = Vec::with_capacity(PROGRAMS as usize);
        for i in 0..PROGRAMS {
            let handle = runtime
                .handle()
                .spawn(move |fx| async move {
                    fx.perform(WaitForShutdown {}).await?;
                    fx.perform(GenerateUuid {}).await?;
                    Ok::<_, EffectError>(i)
                })
                .await
                .expect("spawned");
            handles.push(handle);
        }
        handles
    });
    let stats = runtime.stats().clone();
    while stats.snapshot().running() < u64::from(PROGRAMS) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stats.snapshot().spawned, u64::from(PROGRAMS));
    let report = runtime.shutdown(Duration::from_secs(120));
    assert_eq!(report.finished_in_grace, u64::from(PROGRAMS));
    assert_eq!(report.aborted, 0);
    let mut seen = vec![false; PROGRAMS as usize];
    for handle in handles {
        let i = handle
            .blocking_join()
            .expect("finished")
            .expect("effects answered");
        assert!(!seen[i as usize], "program {i} reported twice");
        seen[i as usize] = true;
    }
    assert!(seen.iter().all(|s| *s), "every program reported");
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.finished("ok"), u64::from(PROGRAMS));
    let system = snapshot.family("System").expect("registered");
    assert_eq!(
        (system.requested, system.ok),
        (2 * u64::from(PROGRAMS), 2 * u64::from(PROGRAMS))
    );
}
