//! Effects arrive from outside as JSON (traces, scripts, queues): any bytes must
//! decode to a value or a clear error, never a panic, and a decoded value must
//! survive a round trip unchanged.
#![no_main]

use effectful::effect::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NaN metric values are not equal to themselves: compare encodings, which
    // must be stable from the first re-encoding on.
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let json = serde_json::to_vec(&request).expect("a decoded request encodes");
        let again: Request = serde_json::from_slice(&json).expect("an encoded request decodes");
        assert_eq!(serde_json::to_vec(&again).expect("encodes"), json);
    }
    if let Ok(response) = serde_json::from_slice::<Response>(data) {
        let json = serde_json::to_vec(&response).expect("a decoded response encodes");
        let again: Response = serde_json::from_slice(&json).expect("an encoded response decodes");
        assert_eq!(serde_json::to_vec(&again).expect("encodes"), json);
    }
});
