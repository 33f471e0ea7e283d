//! The progress bar: redrawn from the shared counters a few times a second, with totals and an ETA once
//! the listings have finished.

use crate::stats::Reporter;
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
                let s = reporter.snapshot();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = s.live_bytes as f64 / secs;
                let mut msg = format!(
                    "{} objects, {} ({}/s), skipped {}, failed {}",
                    s.transferred,
                    super::human_bytes(s.live_bytes),
                    super::human_bytes(rate as u64),
                    s.skipped,
                    s.failed
                );
                if s.listing_done && s.planned_bytes > 0 {
                    let left = s.planned_bytes.saturating_sub(s.live_bytes);
                    let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
                    msg.push_str(&format!(
                        " of {} objects, {} total, ETA {:.0}s",
                        s.planned_objects,
                        super::human_bytes(s.planned_bytes),
                        eta
                    ));
                }
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
