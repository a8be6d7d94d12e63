//! Fuzz target: AMQP frames split and decoded as the connection does (methods, content headers).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::frames(data);
});
