//! How the wirelens commands print: the `--format` choice and the exit codes,
//! shared by the binary and the command crates behind it (`wirelens-bench`).

use clap::ValueEnum;

/// How data is printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people, worst flows first.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line (schema wirelens.flow.v1).
    Ndjson,
}

/// Exit codes (documented in the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input could not be read at all: missing file, not a capture, no
    /// frame of a supported link type.
    pub const INPUT: u8 = 1;
    /// Usage error (clap's own code).
    pub const USAGE: u8 = 2;
    /// The capture broke partway (truncated or corrupt): everything read up to
    /// the break was analysed and printed.
    pub const PARTIAL: u8 = 3;
}
