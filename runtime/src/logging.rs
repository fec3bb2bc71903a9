//! Logging set-up: every binary logs through `tracing`, as JSON lines (one
//! object per line, for log collectors) or as human-readable text, with the
//! level from `RUST_LOG` (default `info`), on standard output.

use clap::ValueEnum;

/// How log lines are written (`--log-format`, env `OPENMODEL_LOG_FORMAT`).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// The `--log-format` flag, to `#[command(flatten)]` into a binary's args.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct LogArgs {
    /// Log format: one JSON object per line, or human-readable text. The
    /// level comes from RUST_LOG (default info).
    #[arg(long, env = "OPENMODEL_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Installs the process-wide subscriber. A second call (tests that start
/// several servers in one process) keeps the first subscriber.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
