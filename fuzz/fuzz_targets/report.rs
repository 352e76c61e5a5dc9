//! Fuzz target: the control plane's report path: JSON bytes -> NodeReport ->
//! validate -> (when valid) round trip and aggregation.
//! The invariants are in `wirelens_fuzz::ctrl::check_report`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirelens_fuzz::ctrl::check_report(data);
});
