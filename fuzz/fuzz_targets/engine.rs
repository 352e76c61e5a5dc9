//! Fuzz target: the Engine fed an arbitrary sequence of frames with arbitrary timestamps.
//! The invariants are in `wirelens_fuzz::dataplane::check_engine`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirelens_fuzz::dataplane::check_engine(data);
});
