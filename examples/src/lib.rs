//! Runnable examples; run one with `cargo run -p effectful-examples --example NAME`.
