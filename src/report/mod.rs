//! What the user sees: tracing set-up, the progress bar, and the end-of-run summary line.

pub mod progress;

use crate::stats::Stats;
use tracing_subscriber::EnvFilter;

/// Logging options, as the CLI flags.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `-v` count minus `-q` count (0: warnings and errors).
    pub verbosity: i16,
    /// JSON lines.
    pub json: bool,
    /// ANSI colours off.
    pub no_color: bool,
    /// Include the AWS SDK's own tracing.
    pub aws_sdk: bool,
    /// Log span open/close events.
    pub span_events: bool,
    /// A dry run: at least info level, so every planned copy and delete shows (unless `-q`).
    pub dry_run: bool,
}

/// Installs the global tracing subscriber (stderr). `RUST_LOG` overrides the verbosity flags.
pub fn init_tracing(opts: &LogOptions) {
    let verbosity = if opts.dry_run && opts.verbosity == 0 {
        1
    } else {
        opts.verbosity
    };
    let level = match verbosity {
        i16::MIN..=-2 => "off",
        -1 => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            if opts.aws_sdk {
                // The signer traces whole requests, headers included: SSE-C keys would be shown in
                // clear. Its debug level and everything else of the SDK stay available.
                format!("{level},aws_sigv4=debug")
            } else {
                format!("off,s3sync={level},s3sync_io={level}")
            }
        });
    let span_events = if opts.span_events {
        tracing_subscriber::fmt::format::FmtSpan::NEW | tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_span_events(span_events)
        .with_ansi(!opts.no_color && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if opts.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Human-readable byte count (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// The end-of-run summary as one JSON object on one line (`--json-summary`), with the shard of a
/// sharded job, so the logs of many shards can be aggregated.
pub fn json_summary(s: &Stats, shard: Option<&crate::shard::Shard>, exit_code: i32) -> String {
    serde_json::json!({
        "shard_index": shard.map(|x| x.index),
        "shard_count": shard.map(|x| x.count),
        "shard_mode": shard.map(|x| x.mode.name()),
        "transferred": s.transferred,
        "bytes": s.bytes,
        "etag_verified": s.etag_verified,
        "checksum_verified": s.checksum_verified,
        "skipped": s.skipped,
        "deleted": s.deleted,
        "errors": s.failed,
        "warnings": s.warnings,
        "duration_sec": s.elapsed.as_secs_f64(),
        "exit_code": exit_code,
    })
    .to_string()
}

/// The one-line summary printed at the end of a run.
pub fn summary_line(s: &Stats) -> String {
    let secs = s.elapsed.as_secs_f64().max(0.001);
    format!(
        "{} | {}/sec, transferred {} objects | {:.0} objects/sec, etag verified {} objects, checksum verified {} objects, deleted {} objects, skipped {} objects, error {} objects, warning {} objects, duration {:.2} sec",
        human_bytes(s.bytes),
        human_bytes((s.bytes as f64 / secs) as u64),
        s.transferred,
        s.transferred as f64 / secs,
        s.etag_verified,
        s.checksum_verified,
        s.deleted,
        s.skipped,
        s.failed,
        s.warnings,
        secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(30 * 1024 * 1024), "30.00 MiB");
    }

    #[test]
    fn summary_names_every_count() {
        let s = Stats {
            transferred: 2,
            skipped: 1,
            failed: 3,
            etag_verified: 4,
            checksum_verified: 5,
            ..Default::default()
        };
        let line = summary_line(&s);
        assert!(line.contains("transferred 2 objects"));
        // The original's order: etag verified, then checksum verified.
        assert!(line.contains("etag verified 4 objects, checksum verified 5 objects"));
        assert!(line.contains("skipped 1 objects"));
        assert!(line.contains("error 3 objects"));
    }
}
