//! How the wirelens commands print: the `--format` choice, the exit codes and
//! durations for people ([`human_ns`]),
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

/// How [`human_ns`] writes a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsStyle {
    /// About three significant digits, ns to s (`850ns`, `12us`, `1.25ms`,
    /// `12.5ms`, `1.25s`): the capture tables, timelines and probe output.
    Fine,
    /// Whole us below 1 ms, one decimal of ms below 10 s, then s (`12us`,
    /// `1.3ms`, `12.5s`): the control plane's query columns.
    Coarse,
}

/// A duration in ns for people; `-` for none.
pub fn human_ns(ns: impl Into<Option<u64>>, style: NsStyle) -> String {
    let Some(ns) = ns.into() else {
        return "-".into();
    };
    let v = ns as f64;
    match style {
        NsStyle::Fine => match ns {
            0..1_000 => format!("{ns}ns"),
            1_000..1_000_000 => format!("{:.0}us", v / 1e3),
            1_000_000..10_000_000 => format!("{:.2}ms", v / 1e6),
            10_000_000..1_000_000_000 => format!("{:.1}ms", v / 1e6),
            _ => format!("{:.2}s", v / 1e9),
        },
        NsStyle::Coarse => match ns {
            0..1_000_000 => format!("{}us", ns / 1000),
            1_000_000..10_000_000_000 => format!("{:.1}ms", v / 1e6),
            _ => format!("{:.1}s", v / 1e9),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_styles() {
        let fine: Vec<String> = [999, 12_345, 1_254_000, 12_500_000, 1_250_000_000]
            .map(|n| human_ns(n, NsStyle::Fine))
            .into();
        assert_eq!(fine, ["999ns", "12us", "1.25ms", "12.5ms", "1.25s"]);
        let coarse: Vec<String> = [999, 12_345, 1_254_000, 12_500_000_000]
            .map(|n| human_ns(n, NsStyle::Coarse))
            .into();
        assert_eq!(coarse, ["0us", "12us", "1.3ms", "12.5s"]);
        assert_eq!(human_ns(None, NsStyle::Fine), "-");
        assert_eq!(human_ns(None, NsStyle::Coarse), "-");
    }
}
