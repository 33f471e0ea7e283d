//! The binary edge: parse → validate → run → summary → exit code.

use clap::Parser;
use s3sync::cli::CliArgs;
use s3sync::error::{EXIT_ERROR, EXIT_INVALID_ARGS};
use s3sync::report::{init_tracing, json_summary as json_summary_line, progress::Progress, summary_line};
use s3sync::{Error, Sync, SyncEvent};
use std::io::IsTerminal;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    s3sync::prefer_small_pages();
    let args = CliArgs::parse();
    if let Some(shell) = args.auto_complete_shell {
        CliArgs::completions(shell, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if args.generate_man_page {
        return print_man_page();
    }
    init_tracing(&args.log_options());
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("s3sync: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR as u8);
        }
    };
    if let Some(n) = args.make_shard_plan {
        return print_shard_plan(&runtime, &cfg, n);
    }
    let output = Output::of(&args, &cfg);
    let code = runtime.block_on(run(cfg, output));
    ExitCode::from(code as u8)
}

/// `--generate-man-page`: writes the man page to stdout.
fn print_man_page() -> ExitCode {
    match CliArgs::man_page(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3sync: error: cannot write the man page: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

/// `--make-shard-plan`: lists the source and prints a plan of `count` shards as JSON on stdout.
fn print_shard_plan(runtime: &tokio::runtime::Runtime, cfg: &s3sync::Config, count: u32) -> ExitCode {
    match runtime.block_on(s3sync::make_shard_plan(cfg, count)) {
        Ok(plan) => match serde_json::to_string_pretty(&plan) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("s3sync: error: cannot write the shard plan: {e}");
                ExitCode::from(EXIT_ERROR as u8)
            }
        },
        Err(e) => {
            eprintln!("s3sync: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// What a run shows besides the log.
struct Output {
    /// `--json-summary`: print the summary as JSON (of the run's shard, if any).
    json_summary: Option<Option<s3sync::shard::Shard>>,
    /// `--warn-as-error`.
    warn_as_error: bool,
    /// Whether to show the progress bar.
    show_progress: bool,
    /// Whether to leave the summary line out.
    quiet: bool,
}

impl Output {
    /// The output that `args` ask for, for a run of `cfg`.
    fn of(args: &CliArgs, cfg: &s3sync::Config) -> Self {
        // --show-no-progress hides the bar and the summary line, as in the reference; a bar between
        // per-object log lines (-v, or a dry run) would only garble them.
        let show_progress = args.quiet == 0
            && args.verbose == 0
            && !args.dry_run
            && !args.show_no_progress
            && !args.json_tracing
            && std::io::stderr().is_terminal();
        Output {
            json_summary: args.json_summary.then(|| cfg.shard.clone()),
            warn_as_error: cfg.warn_as_error,
            show_progress,
            quiet: args.quiet > 0 || args.show_no_progress,
        }
    }
}

/// Runs the sync of `cfg` with its progress bar, status lines, signal handling and summary; returns
/// the exit code.
async fn run(cfg: s3sync::Config, output: Output) -> i32 {
    let report_status = cfg.report_sync_status;
    let mut sync = Sync::new(cfg);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // --report-sync-status prints one line per object on stdout.
    let printer = match (report_status, sync.events()) {
        (true, Some(events)) => Some(print_statuses(events, done_rx)),
        _ => None,
    };
    let reporter = sync.reporter();
    let signal_code = signals::watch(sync.cancellation_token());
    let progress = output.show_progress.then(|| Progress::start(reporter.clone()));
    let result = sync.run().await;
    let _ = done_tx.send(());
    if let Some(p) = printer {
        let _ = p.await;
    }
    if let Some(p) = progress {
        p.finish();
    }
    let started = !matches!(&result, Err(e) if !matches!(e, Error::Cancelled));
    if !output.quiet && started {
        eprintln!("{}", summary_line(&reporter.snapshot()));
    }
    let code = match result {
        Ok(stats) => stats.exit_code(output.warn_as_error),
        Err(Error::Cancelled) => EXIT_ERROR,
        Err(e) => {
            eprintln!("s3sync: error: {e}");
            e.exit_code()
        }
    };
    let code = match signal_code.load(std::sync::atomic::Ordering::SeqCst) {
        0 => code,
        signalled => signalled,
    };
    if let Some(shard) = &output.json_summary {
        println!("{}", json_summary_line(&reporter.snapshot(), shard.as_ref(), code));
    }
    code
}

/// `--report-sync-status`: starts a task that prints one line per object on stdout from `events`,
/// until they end or `done` fires (then what is still queued is printed).
fn print_statuses(
    mut events: tokio::sync::mpsc::UnboundedReceiver<SyncEvent>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let print = |e: SyncEvent| {
            if let SyncEvent::Status { key, status } = e {
                println!("{} {key}", status.as_str());
            }
        };
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => print(e),
                    None => break,
                },
                _ = &mut done => {
                    while let Ok(e) = events.try_recv() {
                        print(e);
                    }
                    break;
                }
            }
        }
    })
}

/// SIGINT and SIGTERM: the first one cancels the run (it then winds down: multipart uploads aborted,
/// temporary files removed, summary printed) and sets the exit code (130 / 143); a second one exits at
/// once with that code.
mod signals {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    /// Exit code of a run stopped by SIGINT.
    const EXIT_SIGINT: i32 = 130;
    /// Exit code of a run stopped by SIGTERM.
    const EXIT_SIGTERM: i32 = 143;

    /// Starts watching for the signals; the returned code is 0 until one arrives.
    pub fn watch(cancel: CancellationToken) -> Arc<AtomicI32> {
        let code = Arc::new(AtomicI32::new(0));
        let seen = code.clone();
        tokio::spawn(async move {
            let mut term = terminate();
            loop {
                let got = tokio::select! {
                    r = tokio::signal::ctrl_c() => match r {
                        Ok(()) => EXIT_SIGINT,
                        Err(_) => return,
                    },
                    _ = recv(&mut term) => EXIT_SIGTERM,
                };
                if seen
                    .compare_exchange(0, got, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    eprintln!("s3sync: interrupted again: exiting now");
                    std::process::exit(seen.load(Ordering::SeqCst));
                }
                tracing::warn!(
                    "interrupted: stopping (in-flight multipart uploads are aborted; interrupt again to exit at once)"
                );
                cancel.cancel();
            }
        });
        code
    }

    #[cfg(unix)]
    type Term = Option<tokio::signal::unix::Signal>;
    #[cfg(not(unix))]
    type Term = Option<()>;

    #[cfg(unix)]
    fn terminate() -> Term {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    }
    #[cfg(not(unix))]
    fn terminate() -> Term {
        None
    }

    #[cfg(unix)]
    async fn recv(t: &mut Term) {
        match t {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    async fn recv(_: &mut Term) {
        std::future::pending().await
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("s3sync: error: {e}");
    let code = e.exit_code();
    ExitCode::from(if code == 0 { EXIT_INVALID_ARGS as u8 } else { code as u8 })
}
