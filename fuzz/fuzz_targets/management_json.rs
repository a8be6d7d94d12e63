//! Fuzz target: management API PUT/POST JSON bodies through the handlers' parse and validation functions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::management_json(data);
});
