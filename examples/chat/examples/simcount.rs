//! Instructions per simulated effect, for `valgrind --tool=callgrind`: wall-clock
//! benches on a shared machine wander, instruction counts do not. It runs the seed
//! `sim/chat/clients_100` times (100 clients, 10 simulated minutes, chaos faults,
//! transcripts unchecked), or only sets it up with `setup`, so that the difference
//! of the two is the simulation alone.
//!
//! ```text
//! cargo build --release -p effectful-chat --example simcount
//! for mode in setup run; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$mode \
//!     target/release/examples/simcount $mode 2>&1 | grep -E 'refs|effects'
//! done   # (refs(run) - refs(setup)) / effects = instructions per simulated effect
//! ```
use std::hint::black_box;
use std::time::Duration;

use effectful_chat::sim::{ChatSim, ChatSimConfig};
use effectful_test::fault::FaultPlan;

fn main() {
    let mut config = ChatSimConfig::new(1, 100, Duration::from_secs(600));
    config.faults = FaultPlan::chaos();
    let mut chat = ChatSim::unchecked(&config);
    if std::env::args().nth(1).as_deref() == Some("setup") {
        std::mem::forget(black_box(chat));
        return;
    }
    let report = chat.run();
    println!("effects {}", report.effects);
    // Dropped unmeasured, as the bench drops it after the timing.
    std::mem::forget(chat);
}
