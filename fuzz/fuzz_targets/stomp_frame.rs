//! Fuzz target: STOMP frames through the streaming decoder in two reads split where the first byte says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::stomp_frame(data);
});
