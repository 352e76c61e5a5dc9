//! Fuzz target: CaptureReader over arbitrary bytes (pcap and pcapng).
//! The invariants are in `wirelens_fuzz::dataplane::check_capture`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirelens_fuzz::dataplane::check_capture(data);
});
