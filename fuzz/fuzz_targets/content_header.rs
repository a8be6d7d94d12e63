//! Fuzz target: content header payloads: basic properties and the headers table.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::content_header(data);
});
