//! Applying the embedded migrations, and distributing the tables on Citus.
//!
//! # Why not `sqlx::migrate::Migrator::run`
//!
//! sqlx serialises concurrent migrators with a *session* advisory lock
//! (`pg_advisory_lock` … `pg_advisory_unlock`) taken outside any
//! transaction. Behind a pooler in transaction mode (PgBouncer) the lock
//! and the unlock may reach different server connections: the lock is
//! never released and the next instance to start waits forever. So the
//! migrations here run in **one transaction** holding a
//! transaction-scoped lock (`pg_advisory_xact_lock`), which a pooler keeps
//! on one server connection and which ends with the transaction whatever
//! happens. All pending migrations commit together or not at all, and
//! statements are sent unnamed, so nothing outlives the transaction.
//!
//! The embedded migrations and their checksums are still sqlx's
//! (`sqlx::migrate!`), recorded in sqlx's own `_sqlx_migrations` table, so
//! databases migrated by earlier versions keep working.
//!
//! # Citus
//!
//! When the database has the `citus` extension, the same transaction
//! distributes `owners`, `threads`, `messages` and `idempotency` by
//! `owner`, colocated, so every request's rows live on one shard and every
//! request is a single-shard router query (DESIGN.md, "Beyond one
//! machine"). Idempotent across restarts (already distributed tables are
//! left alone) and concurrent starts (the advisory lock), logged at start.

use std::time::Instant;

use sqlx::{Executor, PgConnection, Postgres, Row};
use weft_adapters_sqlx::{Pool, StoreError};

/// The tables distributed by `owner` on Citus, the first being the one the
/// others are colocated with.
const DISTRIBUTED: [&str; 4] = ["owners", "threads", "messages", "idempotency"];

/// The key of the migration lock (any constant; one per application).
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended('weft migrations', 0))";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// A migration problem the database did not raise itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// An applied migration differs from the embedded one.
    #[error("migration {0} was changed after it was applied (checksum differs)")]
    Changed(i64),
    /// An applied migration is marked as failed (left by an interrupted
    /// run of another tool).
    #[error("migration {0} is recorded as failed; repair the database by hand")]
    Dirty(i64),
    /// Only some of Weft's tables are distributed on Citus.
    #[error("on Citus, some but not all of Weft's tables are distributed ({0:?}); distribute the rest by owner, colocated, or undistribute them")]
    PartlyDistributed(Vec<String>),
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Migrate(Box::new(e))
}

/// Applies every pending embedded migration of `migrator` and, on Citus,
/// distributes the tables — all in one transaction under the migration lock.
///
/// # Errors
/// [`StoreError::Migrate`] when a migration fails (nothing of this run is
/// kept), an applied one was changed, or the Citus tables are half
/// distributed; [`StoreError::Connect`] when no connection can be had.
pub(crate) async fn run(
    pool: &Pool<Postgres>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let mut conn = pool
        .acquire(None)
        .await
        .map_err(|e| StoreError::Connect(Box::new(e)))?;
    // READ WRITE explicitly: a direct connection's session is read-only by
    // default (see `uow::session_sql`).
    conn.execute(sqlx::raw_sql("BEGIN READ WRITE"))
        .await
        .map_err(db)?;
    match apply(&mut conn, migrator).await {
        Ok(()) => {
            conn.execute(sqlx::raw_sql("COMMIT")).await.map_err(db)?;
            Ok(())
        }
        Err(e) => {
            if conn.execute(sqlx::raw_sql("ROLLBACK")).await.is_err() {
                // Never hand the pool a connection in an unknown state.
                weft_adapters_sqlx::pool::discard(conn);
            }
            Err(e)
        }
    }
}

async fn apply(
    conn: &mut PgConnection,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    conn.execute(sqlx::raw_sql(LOCK_SQL)).await.map_err(db)?;
    conn.execute(sqlx::raw_sql(CREATE_TABLE))
        .await
        .map_err(db)?;
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations")
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)?;
    for m in migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            Some((v, _, false)) => {
                return Err(StoreError::Migrate(Box::new(MigrateError::Dirty(*v))))
            }
            Some((v, checksum, true)) if checksum.as_slice() != &*m.checksum => {
                return Err(StoreError::Migrate(Box::new(MigrateError::Changed(*v))));
            }
            Some(_) => continue,
            None => {}
        }
        let started = Instant::now();
        conn.execute(sqlx::raw_sql(&m.sql)).await.map_err(db)?;
        let elapsed = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, $4)",
        )
        .persistent(false)
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .bind(elapsed)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        tracing::info!(version = m.version, description = %m.description, "migration applied");
    }
    distribute_on_citus(conn).await
}

/// On a database with the `citus` extension, distributes Weft's tables by
/// `owner`, colocated, unless they already are.
async fn distribute_on_citus(conn: &mut PgConnection) -> Result<(), StoreError> {
    let citus: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if !citus {
        return Ok(());
    }
    let distributed: Vec<String> = sqlx::query_scalar(
        "SELECT logicalrelid::regclass::text FROM pg_dist_partition \
         WHERE logicalrelid::regclass::text = ANY($1)",
    )
    .persistent(false)
    .bind(&DISTRIBUTED[..])
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    if distributed.len() == DISTRIBUTED.len() {
        tracing::info!("Citus: tables already distributed by owner (colocated)");
        return Ok(());
    }
    if !distributed.is_empty() {
        return Err(StoreError::Migrate(Box::new(
            MigrateError::PartlyDistributed(distributed),
        )));
    }
    // Distributing a table referenced by a foreign key from a table that
    // is still local is refused, so the key is dropped and added back once
    // both sides are distributed and colocated. Sequential mode lets the
    // distribution run in this transaction after its DDL.
    // Each statement goes on its own: Citus refuses a multi-command string
    // here ("cannot insert multiple commands into a prepared statement").
    let [first, rest @ ..] = DISTRIBUTED;
    let mut steps = vec![
        "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'".to_owned(),
        "ALTER TABLE messages DROP CONSTRAINT messages_thread_fkey".to_owned(),
        format!("SELECT create_distributed_table('{first}', 'owner')"),
    ];
    for t in rest {
        steps.push(format!(
            "SELECT create_distributed_table('{t}', 'owner', colocate_with => '{first}')"
        ));
    }
    steps.push(
        "ALTER TABLE messages ADD CONSTRAINT messages_thread_fkey \
         FOREIGN KEY (owner, thread_id) REFERENCES threads (owner, id)"
            .to_owned(),
    );
    // Children before parents: rows that existed before are now copied to
    // the shards, so the coordinator's local copies are dropped.
    for t in DISTRIBUTED.iter().rev() {
        steps.push(format!(
            "SELECT truncate_local_data_after_distributing_table('{t}')"
        ));
    }
    for step in &steps {
        conn.execute(sqlx::raw_sql(step)).await.map_err(db)?;
    }
    tracing::info!(
        tables = ?DISTRIBUTED,
        "Citus: distributed the tables by owner, colocated"
    );
    Ok(())
}
