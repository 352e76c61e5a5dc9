//! wirelens: the one binary. Thin: argument parsing and output; the work is
//! done by the `wirelens-dataplane` engine.

mod analyze;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Packet-level network observability: per-flow loss (before or after the
/// tap), RTT, bursts, zero-window stalls and path-MTU trouble, from captures
/// or live interfaces.
#[derive(Debug, Parser)]
#[command(name = "wirelens", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Analyze(analyze::AnalyzeArgs),
}

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
    /// The input could not be read at all: missing file, not a capture,
    /// unsupported link type at the first frame.
    pub const INPUT: u8 = 1;
    /// Usage error (clap's own code).
    pub const USAGE: u8 = 2;
    /// The capture broke partway (truncated or corrupt): everything read up to
    /// the break was analysed and printed.
    pub const PARTIAL: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Analyze(args) => analyze::run(&args),
    };
    ExitCode::from(code)
}
