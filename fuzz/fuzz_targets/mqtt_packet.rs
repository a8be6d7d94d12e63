//! Fuzz target: MQTT 3.1/3.1.1 packets split and decoded as the connection does (protocol checks, decoder).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_broker::fuzz::mqtt_packet(data);
});
