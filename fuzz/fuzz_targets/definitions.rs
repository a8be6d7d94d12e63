//! Fuzz target: definitions.json restored, snapshotted and restored again.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::definitions(data);
});
