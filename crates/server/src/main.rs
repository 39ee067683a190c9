//! The `weft` binary: telemetry, configuration, then the composition root.
//! `weft serve` (the default), `weft token --user ID`, `weft migrate`, and
//! the data lifecycle (API.md "Data lifecycle"): `weft purge
//! --archived-before DURATION`, `weft export --user ID`, `weft erase-user
//! --user ID`, `weft backup --to PATH`.
//!
//! A failure is a user's problem to fix, not a crash: it is reported as one
//! line naming its cause (through the log, so `WEFT_LOG_FORMAT=json` gets a
//! JSON line; on stderr for `weft token`), never as a panic or a backtrace,
//! and the exit status is 1 (2 for a command line clap refuses).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use weft_app::lifecycle::BatchPolicy;
use weft_domain::UserId;
use weft_http::auth::TokenKeys;
use weft_server::config::{
    find_secret, BackupArgs, Cli, Command, DatabaseArgs, DatabaseUrl, EraseArgs, ExportArgs,
    LogFormat, PurgeArgs, SecretSource, ServeArgs, TokenArgs,
};
use weft_server::invocation::Invocation;
use weft_server::lifecycle::{
    backup_sqlite, human_duration, lifecycle, open_existing, pg_dump_hint, write_json_line,
};
use weft_server::startup::StopSignals;
use weft_server::store::Store;
use weft_server::{telemetry, Application};

/// jemalloc rather than the system allocator: less CPU per request and
/// freed memory returned sooner (measured in docs/BENCHMARKS.md,
/// "What was cut, each measured"; not built for MSVC, which jemalloc does not support).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Where a fatal error goes.
#[derive(Clone, Copy)]
enum Report {
    /// Through the installed log subscriber (text or JSON lines).
    Log,
    /// One `error: …` line on stderr (no subscriber: `weft token`).
    Stderr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused_command_line(e),
    };
    let program = Invocation::current();
    let (report, result) = match cli.command {
        None => (Report::Log, serve(cli.serve, &program).await),
        Some(Command::Serve(args)) => (Report::Log, serve(*args, &program).await),
        Some(Command::Token(args)) => (Report::Stderr, token(args, &program)),
        Some(Command::Migrate(args)) => (Report::Log, migrate(args).await),
        Some(Command::Purge(args)) => (Report::Log, purge(args).await),
        Some(Command::Export(args)) => (Report::Log, export(args).await),
        Some(Command::EraseUser(args)) => (Report::Log, erase_user(args).await),
        Some(Command::Backup(args)) => (Report::Log, backup(args).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` is the cause chain on one line; Debug would add a
            // backtrace under RUST_BACKTRACE=1, which a user error is not.
            match report {
                Report::Log => tracing::error!("{e:#}"),
                Report::Stderr => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refuses (e.g. `--pool-max 0`): clap's own message,
/// or, under `WEFT_LOG_FORMAT=json`, one JSON log line with its first line.
fn refused_command_line(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::var("WEFT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    if telemetry::init(telemetry::fallback(LogFormat::Json)).is_ok() {
        tracing::error!("{first}");
    } else {
        eprintln!("error: {first}");
    }
    ExitCode::from(2)
}

/// Installs the log subscriber `filter` and `format` ask for; an invalid
/// filter is refused, reported through an `info` subscriber in the same
/// format.
fn install_logs(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let subscriber = match telemetry::subscriber(filter, format) {
        Ok(subscriber) => subscriber,
        Err(bad) => {
            telemetry::init(telemetry::fallback(format))
                .context("installing the log subscriber")?;
            return Err(bad.into());
        }
    };
    telemetry::init(subscriber).context("installing the log subscriber")
}

/// Binds and releases `addr`, so a port in use is reported before any
/// database or secret file is created. (The real listener is bound again
/// moments later by [`Application::build`].)
fn check_bind(addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_released) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(anyhow::Error::new(e).context(format!(
                "could not listen on {addr}: another process (another weft?) is using it; \
                 stop it or set WEFT_BIND to another address"
            )))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("could not listen on {addr}"))),
    }
}

async fn serve(args: ServeArgs, program: &Invocation) -> anyhow::Result<()> {
    install_logs(&args.log, args.log_format)?;
    if let Some((before, after)) = weft_server::serve::raise_open_file_limit() {
        tracing::info!(
            before,
            after,
            "raised the open-file limit to the hard limit"
        );
    }
    // Everything that can be refused is checked before the first file (the
    // secret, the database) is created.
    check_bind(args.bind)?;
    if let DatabaseUrl::Postgres { url } = DatabaseUrl::parse(&args.database.database_url)? {
        weft_server::store::probe_postgres(&url)
            .await
            .context("weft could not start")?;
    }
    let (settings, source) = args.settings()?;
    match &source {
        SecretSource::Configured => tracing::info!("JWT secret taken from WEFT_JWT_SECRET"),
        SecretSource::File(p) => {
            tracing::info!(file = %p.display(), "JWT secret read from its file")
        }
        SecretSource::Generated(p) => {
            tracing::info!(file = %p.display(), "generated a new JWT secret (mode 0600); keep this file private")
        }
    }
    let database = settings.database.describe();
    let app = Application::build(settings)
        .await
        .context("weft could not start")?;
    // Before the log line that tells anyone the server is up.
    let signals = StopSignals::listen().context("listening for SIGTERM and Ctrl-C")?;
    tracing::info!(
        address = %app.local_addr(),
        database = %database,
        "weft is serving http://{}/v1 on {} — get a token with: {}",
        app.local_addr(),
        database,
        args.token_command(&source, program)
    );
    app.run_until_stopped(signals).await.context("serving")?;
    tracing::info!("weft stopped");
    Ok(())
}

fn token(args: TokenArgs, program: &Invocation) -> anyhow::Result<()> {
    let database = DatabaseUrl::parse(&args.database_url)?;
    let secret = find_secret(&args.secret, &database, &program.serve())?;
    // The server refuses a `sub` holding control characters (it would be
    // unsafe in a log line), so such a token is refused here instead of
    // printed and then rejected with 401.
    anyhow::ensure!(
        weft_http::auth::is_safe_subject(&args.user),
        "--user must be 1 to 128 characters, none a control character"
    );
    let user = UserId::parse(&args.user).context("--user must be 1 to 128 characters")?;
    let token = TokenKeys::configured(&secret, args.claims.rules(), None).mint(&user, args.ttl)?;
    // The one place Weft prints to stdout: the token is the command's output.
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    install_logs("info", LogFormat::Text)?;
    let database = DatabaseUrl::parse(&args.database_url)?;
    let store = Store::connect_url(
        &database,
        args.pool_max,
        Duration::from_millis(args.statement_timeout_ms),
        args.pg_statement_cache.is_on(),
    )
    .await?;
    store.migrate().await?;
    store.close().await;
    tracing::info!(database = %database.describe(), "migrations applied");
    Ok(())
}

/// How often a long maintenance command says how far it got (on stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A line on stderr every [`PROGRESS_EVERY`] while batches run.
fn progress(what: &'static str) -> impl FnMut(&weft_app::lifecycle::BatchReport) + Send {
    let mut rows = 0u64;
    let mut last = Instant::now();
    move |batch| {
        rows = rows.saturating_add(batch.rows);
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            eprintln!("{what}: {rows} rows so far");
        }
    }
}

/// Prints a command's result: the one output of a maintenance command.
#[allow(clippy::print_stdout)]
fn say(text: &str) {
    println!("{text}");
}

async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    install_logs("warn", LogFormat::Text)?;
    let (store, database) = open_existing(&args.database).await?;
    let policy = args.batches.policy();
    let result = lifecycle(&store, policy)
        .purge(args.archived_before, &mut progress("purge"))
        .await;
    store.close().await;
    let r =
        result.context("the purge stopped (what it purged stays purged; run it again to go on)")?;
    say(&format!(
        "purged {} threads and {} messages deleted through the API more than {} ago \
         (before {} Unix time) from {}, in {} batches of at most {} rows (longest {} ms)",
        r.threads,
        r.messages,
        human_duration(args.archived_before),
        r.deleted_before.unix_seconds(),
        database.describe(),
        r.batches,
        policy.batch_size,
        r.longest_batch.as_millis()
    ));
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    install_logs("warn", LogFormat::Text)?;
    let user = UserId::parse(&args.user).context("--user must be 1 to 128 characters")?;
    let (store, database) = open_existing(&args.database).await?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let result = lifecycle(&store, BatchPolicy::default())
        .export_user(&user, &mut |item| write_json_line(&mut out, item))
        .await;
    let flushed = out.flush();
    store.close().await;
    let r = result.context("the export stopped")?;
    flushed.context("writing the export to stdout")?;
    // stdout holds the export alone; the summary goes to stderr.
    eprintln!(
        "exported {} threads and {} messages of user '{}' from {}",
        r.threads,
        r.messages,
        user.as_str(),
        database.describe()
    );
    Ok(())
}

async fn erase_user(args: EraseArgs) -> anyhow::Result<()> {
    install_logs("warn", LogFormat::Text)?;
    let user = UserId::parse(&args.user).context("--user must be 1 to 128 characters")?;
    let (store, database) = open_existing(&args.database).await?;
    let result = lifecycle(&store, args.batches.policy())
        .erase_user(&user, &mut progress("erase-user"))
        .await;
    store.close().await;
    let r = result
        .context("the erase stopped (what it deleted stays deleted; run it again to finish)")?;
    let sequence = if r.owner_rows > 0 {
        ", and its thread sequence"
    } else {
        ""
    };
    say(&format!(
        "erased user '{}' from {}: {} threads, {} messages, {} idempotency records{sequence} \
         ({} batches); nothing of the user is left",
        user.as_str(),
        database.describe(),
        r.threads,
        r.messages,
        r.idempotency_records,
        r.batches
    ));
    Ok(())
}

async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    install_logs("warn", LogFormat::Text)?;
    let database = DatabaseUrl::parse(&args.database.database_url)?;
    if let DatabaseUrl::Postgres { url } = &database {
        say(&pg_dump_hint(url));
        return Ok(());
    }
    let (store, _) = open_existing(&args.database).await?;
    let result = backup_sqlite(&store, &args.to).await;
    store.close().await;
    let to = result.context("the backup failed")?;
    say(&format!(
        "backed up {} to {} (one self-contained file: copy it anywhere; \
         `WEFT_DATABASE_URL=sqlite://{} weft serve` opens it)",
        database.describe(),
        to.display(),
        to.display()
    ));
    Ok(())
}
