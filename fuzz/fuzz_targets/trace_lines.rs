//! Trace files come from outside (a colleague's failing run, a production capture):
//! any bytes must read as records or a clear error naming the line, never a panic,
//! and never more than the line limit held for one line.
#![no_main]

use effectful_test::trace::{read_trace, write_trace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = read_trace(data, 4096) {
        let mut out = Vec::new();
        write_trace(&mut out, &records).expect("records encode");
        // What was read writes back and reads again to the same records.
        let again = read_trace(out.as_slice(), usize::MAX).expect("written records read back");
        assert_eq!(again.len(), records.len());
    }
});
