//! An event callback in Rust: count completed and deleted objects and print the final statistics.
//!
//! ```sh
//! cargo run --example event_callback -- ./data s3://bucket/prefix/
//! ```

use async_trait::async_trait;
use s3sync::callback::{CallbackError, EventCallback, EventData, EventType};
use s3sync::{Config, Location, Sync};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Counter {
    completed: AtomicU64,
    deleted: AtomicU64,
}

#[async_trait]
impl EventCallback for Counter {
    async fn on_event(&self, e: &EventData) -> Result<(), CallbackError> {
        if e.event_type == EventType::SYNC_COMPLETE {
            self.completed.fetch_add(1, Ordering::Relaxed);
        } else if e.event_type == EventType::SYNC_DELETE {
            self.deleted.fetch_add(1, Ordering::Relaxed);
        } else if let Some(stats) = &e.stats {
            println!("run finished in {:?}", stats.elapsed);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        eprintln!("usage: event_callback SOURCE TARGET");
        std::process::exit(2);
    };
    let counter = Arc::new(Counter::default());
    let types = EventType::SYNC_COMPLETE | EventType::SYNC_DELETE | EventType::STATS_REPORT;
    let cfg = Config::builder(Location::parse(&src)?, Location::parse(&dst)?)
        .event_callback(counter.clone(), types)
        .build()?;
    Sync::new(cfg).run().await?;
    println!(
        "{} completed, {} deleted",
        counter.completed.load(Ordering::Relaxed),
        counter.deleted.load(Ordering::Relaxed)
    );
    Ok(())
}
