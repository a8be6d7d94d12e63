//! Fuzz target: encoded field tables, validated as queue arguments.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::field_table(data);
});
