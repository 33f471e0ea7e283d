//! The progress bar: redrawn from the shared counters a few times a second, with totals and an ETA once
//! the listings have finished.

use crate::stats::{Reporter, Stats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::time::Duration;

/// A running progress bar; `finish` clears it.
pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts drawing on stderr.
    pub fn start(reporter: Arc<Reporter>) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
        let style =
            ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let msg = message(&reporter.snapshot(), started.elapsed());
                b.set_message(msg);
                b.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress { bar, task }
    }

    /// Stops and clears the bar.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// The progress line for `s`, `elapsed` after the start: the transfers so far, and while the listings
/// run, how many objects each side has listed and at what rate (a listing of millions of objects
/// takes a while before the plan is complete).
fn message(s: &Stats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = s.live_bytes as f64 / secs;
    let mut msg = format!(
        "{} objects, {} ({}/s), skipped {}, failed {}",
        s.transferred,
        super::human_bytes(s.live_bytes),
        super::human_bytes(rate as u64),
        s.skipped,
        s.failed
    );
    if !s.listing_done {
        let listed = s.listed_source + s.listed_target;
        msg.push_str(&format!(
            "; listing: {} source, {} target ({:.0} objects/s)",
            s.listed_source,
            s.listed_target,
            listed as f64 / secs
        ));
    } else if s.planned_bytes > 0 {
        let left = s.planned_bytes.saturating_sub(s.live_bytes);
        let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
        msg.push_str(&format!(
            " of {} objects, {} total, ETA {:.0}s",
            s.planned_objects,
            super::human_bytes(s.planned_bytes),
            eta
        ));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_listing_rate_until_the_listings_end() {
        let mut s = Stats {
            listed_source: 30_000,
            listed_target: 10_000,
            planned_objects: 5,
            planned_bytes: 100,
            ..Default::default()
        };
        let line = message(&s, Duration::from_secs(2));
        assert!(
            line.contains("listing: 30000 source, 10000 target (20000 objects/s)"),
            "{line}"
        );
        assert!(!line.contains("ETA"), "{line}");
        s.listing_done = true;
        let line = message(&s, Duration::from_secs(2));
        assert!(!line.contains("listing:"), "{line}");
        assert!(line.contains("of 5 objects"), "{line}");
    }
}
