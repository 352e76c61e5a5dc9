//! The invariant checks of wirelens's fuzz targets, as plain functions.
//!
//! The same files are compiled into the ordinary test suites
//! (`dataplane/tests/fuzz_regressions.rs`, `ctrl/tests/fuzz_regressions.rs`
//! include them with `#[path]`), so `cargo test` runs every corpus file and a
//! few thousand pseudo-random inputs through exactly what the fuzzer checks.

pub mod ctrl;
pub mod dataplane;
pub mod seeds;
