//! The command line: read `.env`, parse, run the subcommand, print its outcome. Everything
//! else lives in the library.

use clap::Parser;
use coder_slack_bridge::config::{Cli, Command, Needs};
use coder_slack_bridge::{commands, telemetry, App};
use std::process::ExitCode;

fn main() -> ExitCode {
    fix_malloc_mmap_threshold();
    // `.env` first, so clap sees its values as environment variables.
    let from_dotenv = match load_dotenv() {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(&e),
    };
    telemetry::init_logging(cli.settings.log_format);
    if from_dotenv > 0 {
        tracing::info!(
            variables = from_dotenv,
            "settings read from .env in the working folder (the environment wins over it)"
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Half the CPUs (one on a 2-core box): each webhook's work is short, the SQLite store has
    // threads of its own, and fewer workers wake each other less (measured on 2 cores: one
    // worker costs 7–11% less CPU per DM at the same throughput and latency;
    // docs/performance.md). TOKIO_WORKER_THREADS, when set, decides instead.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        builder.worker_threads((cpus / 2).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(cli.settings).await,
            Command::Check => commands::check(cli.settings).await,
            Command::Preview { files, thread } => commands::preview(cli.settings, &files, thread),
            Command::SendTest { email } => commands::send_test(cli.settings, &email).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads `./.env` (the working folder's only) into the environment, without overriding what
/// is already set; returns how many variables it added.
fn load_dotenv() -> Result<usize, String> {
    let pairs =
        coder_slack_bridge::config::read_dotenv(std::path::Path::new(".env")).map_err(|e| e.0)?;
    let mut added = 0;
    for (name, value) in pairs {
        // The first definition in the file wins, as it does in dotenvy.
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
            added += 1;
        }
    }
    Ok(added)
}

/// clap names the flag (`--port`) when a value is wrong; most people set the environment
/// variable, so name that too. Help, version and usage errors stay clap's.
fn clap_failure(error: &clap::Error) -> ExitCode {
    use clap::CommandFactory;
    match coder_slack_bridge::config::explain_clap_error(&Cli::command(), error) {
        Some(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        None => error.exit(),
    }
}

async fn serve(settings: coder_slack_bridge::config::Settings) -> Result<(), String> {
    let config = settings.validate(Needs::Serve).map_err(|e| e.0)?;
    // Listen for signals before anything starts, so a SIGTERM during start-up is a clean
    // shutdown too rather than the default kill.
    let signal = shutdown_signal()?;
    let app = App::build(config).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        signal.await;
        shutdown.cancel();
    });
    app.run_until_stopped().await;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes, systemd) or Ctrl-C; the handlers are installed at once.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        let mut terminate = listen(SignalKind::terminate())?;
        let mut interrupt = listen(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), so after
/// a directory sweep the freed `users.list` page buffers (~2 MB each with full profiles) stay
/// in the heap. Fixed at glibc's starting value, blocks that large are mapped and unmapped
/// each time and the memory goes back at once (measured after a sweep of 100,000 members:
/// +3.4 MiB instead of +8.4 MiB; docs/performance.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_malloc_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; this runs before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_malloc_mmap_threshold() {}
