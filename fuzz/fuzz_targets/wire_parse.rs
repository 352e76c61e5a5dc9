//! Fuzz target: wire::parse over every link type: byte 0 picks the link, the rest is the frame.
//! The invariants are in `wirelens_fuzz::dataplane::check_wire_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirelens_fuzz::dataplane::check_wire_parse(data);
});
