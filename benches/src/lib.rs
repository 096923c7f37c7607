//! Criterion benches for effectful live in `benches/`; run `cargo bench -p effectful-benches -- core/step`.

pub mod cpu;
