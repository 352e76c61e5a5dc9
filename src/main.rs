//! wirelens: the one binary. Thin: argument parsing and output; the work is
//! done by the `wirelens-dataplane` engine.

mod analyze;
mod ctrl_cli;
mod ctrl_top;
mod ipfix_cli;
mod plot;
mod probe_cli;
#[cfg(feature = "live")]
mod run_cli;
mod table;
mod timeline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Bench(wirelens_bench::BenchArgs),
    /// The control plane (`wirelens ctrl serve`).
    Ctrl(ctrl_cli::CtrlArgs),
    /// Nodes reporting to a control plane.
    Nodes(ctrl_cli::QueryArgs),
    /// Services (server ip:port) across all nodes, worst first, with their client subnets.
    Services(ctrl_cli::QueryArgs),
    /// Flows stored by a control plane, worst first.
    Flows(ctrl_cli::QueryArgs),
    /// Alerts of a control plane: which service, which nodes, since when, the evidence.
    Alerts(ctrl_cli::QueryArgs),
    /// Probe results of the nodes (`run --probe`): loss up/down, RTT, jitter, state.
    Probes(ctrl_cli::ProbesArgs),
    Top(ctrl_top::TopArgs),
    Probe(probe_cli::ProbeArgs),
    #[cfg(feature = "live")]
    Run(Box<run_cli::RunArgs>),
}

pub use wirelens_output::{exit, Format};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::Bench(args) => wirelens_bench::run(&args),
        Command::Ctrl(args) => match args.command {
            ctrl_cli::CtrlCommand::Serve(a) => ctrl_cli::serve(&a),
        },
        Command::Nodes(args) => ctrl_cli::nodes(&args),
        Command::Services(args) => ctrl_cli::services(&args),
        Command::Flows(args) => ctrl_cli::flows(&args),
        Command::Alerts(args) => ctrl_cli::alerts(&args),
        Command::Probes(args) => ctrl_cli::probes(&args),
        Command::Top(args) => ctrl_top::run(&args),
        Command::Probe(args) => probe_cli::run(&args),
        #[cfg(feature = "live")]
        Command::Run(args) => run_cli::run(&args),
    };
    ExitCode::from(code)
}
