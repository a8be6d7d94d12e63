//! Fuzz target: frames driven through one connection's channel state machines against a fresh core.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::channels(data);
});
