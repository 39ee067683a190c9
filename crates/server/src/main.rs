//! The `weft` binary: telemetry, configuration, then the composition root.
//! `weft serve` (the default), `weft token --user ID`, `weft migrate`.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use weft_domain::UserId;
use weft_http::auth::TokenKeys;
use weft_server::config::{
    resolve_secret, Cli, Command, DatabaseArgs, DatabaseUrl, SecretSource, ServeArgs, TokenArgs,
};
use weft_server::store::Store;
use weft_server::{telemetry, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Token(args)) => token(args),
        Some(Command::Migrate(args)) => migrate(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(telemetry::subscriber(&args.log, args.log_format))
        .context("installing the log subscriber")?;
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
        .context("starting weft")?;
    tracing::info!(
        address = %app.local_addr(),
        database = %database,
        "weft is serving http://{}/v1 on {} — get a token with: {}",
        app.local_addr(),
        database,
        args.token_command(&source)
    );
    app.run_until_stopped().await.context("serving")?;
    tracing::info!("weft stopped");
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let database = DatabaseUrl::parse(&args.database_url)?;
    let (secret, _) =
        resolve_secret(&args.secret, &database).context("obtaining the JWT secret")?;
    let user = UserId::parse(&args.user).context("--user must be 1 to 128 characters")?;
    let token = TokenKeys::new(&secret).mint(&user, args.ttl)?;
    // The one place Weft prints to stdout: the token is the command's output.
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    telemetry::init(telemetry::subscriber(
        "info",
        weft_server::config::LogFormat::Text,
    ))
    .context("installing the log subscriber")?;
    let database = DatabaseUrl::parse(&args.database_url)?;
    let store = Store::connect_url(
        &database,
        args.pool_max,
        Duration::from_millis(args.statement_timeout_ms),
        args.pg_statement_cache.is_on(),
    )
    .await
    .context("opening the database")?;
    store.migrate().await.context("applying migrations")?;
    store.close().await;
    tracing::info!(database = %database.describe(), "migrations applied");
    Ok(())
}
