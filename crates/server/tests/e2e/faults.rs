//! Faults under load (issue 15 item 5), each bounded in requests and time
//! and followed by the invariant check (`load::check_invariants`): every
//! acknowledged write present, nothing half-written, `message_count`
//! exact, no session `idle in transaction`.
//!
//! The instances are real `weft serve` processes, so that one can die by
//! SIGKILL; PgBouncer and Citus are dedicated to the test when it stops
//! them, so the other tests' shared servers are never disturbed.

use std::time::{Duration, Instant};

use crate::helpers::Topology;
use crate::load::{
    check_invariants, invariant_violations, LoadConfig, LoadDriver, Outcome, Secret, WeftProcess,
};

/// Two instances' settings on `url`; behind PgBouncer without the
/// statement cache (API.md, Configuration).
fn envs(url: &str, secret: &Secret, topology: Topology) -> Vec<(&'static str, String)> {
    let cache = if topology == Topology::PgBouncer {
        "off"
    } else {
        "on"
    };
    vec![
        ("WEFT_DATABASE_URL", url.to_owned()),
        ("WEFT_JWT_SECRET", secret.text.clone()),
        ("WEFT_POOL_MAX", "8".to_owned()),
        ("WEFT_PG_STATEMENT_CACHE", cache.to_owned()),
        ("WEFT_STATEMENT_TIMEOUT_MS", "3000".to_owned()),
        ("WEFT_REQUEST_TIMEOUT_MS", "5000".to_owned()),
    ]
}

fn users(secret: &Secret, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let u = format!("user{i}");
            let t = secret.token(&u);
            (u, t)
        })
        .collect()
}

/// Two instances share one database under load and one dies by SIGKILL
/// mid-request: the survivor keeps serving, and afterwards every write
/// either instance acknowledged is there, whole, with exact counts and no
/// transaction left open by the dead one's connections.
async fn killing_one_of_two_instances_under_load_loses_no_acknowledged_write(topology: Topology) {
    let db = match topology {
        Topology::Postgres => weft_testkit::PgHarness::fresh_database().await,
        Topology::PgBouncer => weft_testkit::BouncerHarness::fresh_database().await,
        other => panic!("not a topology of this fault: {other:?}"),
    }
    .expect("a fresh database");
    let secret = Secret::random();
    let mut a = WeftProcess::start(envs(db.url(), &secret, topology)).await;
    let b = WeftProcess::start(envs(db.url(), &secret, topology)).await;
    let load = LoadDriver::start(LoadConfig {
        bases: vec![a.base.clone(), b.base.clone()],
        users: users(&secret, 6),
        max_ops: 4000,
        max_time: Duration::from_secs(90),
    });
    assert!(
        load.wait_for_acks(150, Duration::from_secs(60)).await,
        "the load makes progress before the fault (acks: {})",
        load.acks()
    );
    let killed_at = Instant::now();
    a.kill9();
    let before = load.acks();
    let recovered = load
        .wait_for_acks(before + 150, Duration::from_secs(60))
        .await;
    let ledger = load.finish().await;
    assert!(
        recovered,
        "the surviving instance keeps acknowledging writes ({})",
        ledger.summary()
    );
    let unexpected = ledger.unexpected();
    assert!(
        unexpected.is_empty(),
        "only 200 or 503 ({}); first: {:?}; the survivor logged:\n{}",
        ledger.summary(),
        unexpected.first(),
        b.problems(10)
    );
    let survivor_failures: Vec<_> = ledger
        .ops
        .iter()
        .filter(|op| op.instance == 1 && matches!(op.outcome, Outcome::Transport(_)))
        .collect();
    assert!(
        survivor_failures.is_empty(),
        "the survivor never drops a request: {survivor_failures:?}"
    );
    let dead_before_kill = ledger
        .ops
        .iter()
        .filter(|op| op.instance == 0 && matches!(op.outcome, Outcome::Transport(_)))
        .any(|op| op.started + op.took < killed_at);
    assert!(!dead_before_kill, "instance A answered until it was killed");
    assert!(
        ledger
            .ops
            .iter()
            .any(|op| op.instance == 0 && matches!(op.outcome, Outcome::Transport(_))),
        "the load still reached for the killed instance ({})",
        ledger.summary()
    );
    check_invariants(&b.base, &secret, &ledger, db.direct_urls()).await;
}

mod killing_one_of_two_instances_under_load_loses_no_acknowledged_write {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::killing_one_of_two_instances_under_load_loses_no_acknowledged_write(
            crate::helpers::Topology::Postgres,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgbouncer() {
        super::killing_one_of_two_instances_under_load_loses_no_acknowledged_write(
            crate::helpers::Topology::PgBouncer,
        )
        .await
    }
}

mod restarting_pgbouncer_under_load_loses_no_acknowledged_write {
    use super::*;

    /// PgBouncer restarts (immediate shutdown, then start on the same port)
    /// under load from two instances: requests caught by it answer 503, not
    /// 500; the instances recover on their own; afterwards every
    /// acknowledged write is there, whole, with exact counts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgbouncer() {
        let bouncer = weft_testkit::BouncerHarness::dedicated()
            .await
            .expect("a PgBouncer of this test's own");
        let db = bouncer.create_database().await.expect("a fresh database");
        let secret = Secret::random();
        let a = WeftProcess::start(envs(db.url(), &secret, Topology::PgBouncer)).await;
        let b = WeftProcess::start(envs(db.url(), &secret, Topology::PgBouncer)).await;
        let load = LoadDriver::start(LoadConfig {
            bases: vec![a.base.clone(), b.base.clone()],
            users: users(&secret, 6),
            max_ops: 4000,
            max_time: Duration::from_secs(90),
        });
        assert!(
            load.wait_for_acks(150, Duration::from_secs(60)).await,
            "the load makes progress before the fault (acks: {})",
            load.acks()
        );
        bouncer.restart().await.expect("PgBouncer restarts");
        let before = load.acks();
        let recovered = load
            .wait_for_acks(before + 150, Duration::from_secs(60))
            .await;
        let ledger = load.finish().await;
        assert!(
            recovered,
            "Weft recovers after the restart ({})",
            ledger.summary()
        );
        let unexpected = ledger.unexpected();
        assert!(
            unexpected.is_empty(),
            "only 200 or 503 ({}); first: {:?}",
            ledger.summary(),
            unexpected.first()
        );
        assert!(
            ledger
                .ops
                .iter()
                .all(|op| !matches!(op.outcome, Outcome::Transport(_))),
            "Weft answers every request ({})",
            ledger.summary()
        );
        check_invariants(&a.base, &secret, &ledger, db.direct_urls()).await;
    }
}

mod stopping_a_citus_worker_fails_only_its_users_and_all_recover {
    use super::*;

    /// One Citus worker stops under load (like a crash): the users whose
    /// shard it holds get 503 within the request deadline, the others are
    /// unaffected; once it is back, every user is served again (waited for
    /// up to 60 s); afterwards every acknowledged write is there, whole,
    /// with exact counts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn citus() {
        let citus = weft_testkit::CitusHarness::dedicated()
            .await
            .expect("a Citus cluster of this test's own");
        let db = citus.create_database().await.expect("a fresh database");
        let secret = Secret::random();
        let weft = WeftProcess::start(envs(db.url(), &secret, Topology::Citus)).await;
        // Four users whose shard is on the worker to stop, four on the other.
        let (mut users, mut on_stopped, mut on_running) = (Vec::new(), Vec::new(), 0);
        for (u, token) in self::users(&secret, 64) {
            let w = citus
                .worker_holding(&db, "threads", &u)
                .await
                .unwrap_or_else(|e| panic!("threads are distributed by owner: {e}"));
            if w == 0 && on_stopped.len() < 4 {
                on_stopped.push(u.clone());
                users.push((u, token));
            } else if w == 1 && on_running < 4 {
                on_running += 1;
                users.push((u, token));
            }
        }
        assert!(
            on_stopped.len() == 4 && on_running == 4,
            "users on both workers: {} and {on_running}",
            on_stopped.len()
        );
        let load = LoadDriver::start(LoadConfig {
            bases: vec![weft.base.clone()],
            users: users.clone(),
            max_ops: 4000,
            max_time: Duration::from_secs(120),
        });
        assert!(
            load.wait_for_acks(100, Duration::from_secs(60)).await,
            "the load makes progress before the fault (acks: {})",
            load.acks()
        );
        citus.stop_worker(0).await.expect("worker stops");
        let down_at = Instant::now();
        // The others go on while the worker is down.
        let before = load.acks();
        let others_served = load
            .wait_for_acks(before + 100, Duration::from_secs(60))
            .await;
        let up_at = Instant::now();
        citus.start_worker(0).await.expect("worker starts");
        let back_at = Instant::now();
        let names: Vec<String> = users.iter().map(|(u, _)| u.clone()).collect();
        load.wait_until_served_since(&names, back_at, Duration::from_secs(60))
            .await;
        let ledger = load.finish().await;
        assert!(
            others_served,
            "users on the running worker are served ({})",
            ledger.summary()
        );

        let unexpected = ledger.unexpected();
        assert!(
            unexpected.is_empty(),
            "only 200 or 503 ({}); first: {:?}; weft logged:\n{}",
            ledger.summary(),
            unexpected.first(),
            weft.problems(10)
        );
        let during = |op: &&crate::load::Op| op.started >= down_at && op.started + op.took <= up_at;
        for op in ledger.ops.iter().filter(during) {
            if on_stopped.contains(&op.user) {
                assert_eq!(
                    op.outcome.label(),
                    "503",
                    "a user on the stopped worker gets 503: {op:?}"
                );
                assert!(
                    op.took < Duration::from_secs(10),
                    "503 within the request deadline (5 s) and its margin: {op:?}"
                );
            } else {
                assert!(
                    op.outcome.is_ok(),
                    "a user on the running worker is unaffected: {op:?}"
                );
            }
        }
        for (u, _) in &users {
            assert!(
                ledger
                    .ops
                    .iter()
                    .any(|op| &op.user == u && op.started >= back_at && op.outcome.is_ok()),
                "{u} is served again once the worker is back ({})",
                ledger.summary()
            );
        }
        check_invariants(&weft.base, &secret, &ledger, db.direct_urls()).await;
    }
}

/// The invariant check is not blind: after a clean load it finds nothing;
/// then a thread whose stored count is off, an acknowledged message that
/// vanished, a thread missing one of its initial messages and a session
/// left idle in a transaction are each reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariant_check_reports_lost_writes_wrong_counts_and_open_transactions() {
    use sqlx::Connection;
    let db = weft_testkit::PgHarness::fresh_database()
        .await
        .expect("a fresh database");
    let secret = Secret::random();
    let weft = WeftProcess::start(envs(db.url(), &secret, Topology::Postgres)).await;
    let load = LoadDriver::start(LoadConfig {
        bases: vec![weft.base.clone()],
        users: users(&secret, 3),
        max_ops: 300,
        max_time: Duration::from_secs(60),
    });
    assert!(load.wait_for_acks(60, Duration::from_secs(60)).await);
    let ledger = load.finish().await;
    let clean = invariant_violations(&weft.base, &secret, &ledger, db.direct_urls()).await;
    assert!(clean.is_empty(), "{clean:?}");

    let mut conn = sqlx::PgConnection::connect(&db.direct_urls()[0])
        .await
        .expect("direct connection");
    let (_, thread, message) = ledger
        .messages
        .iter()
        .find(|(_, _, id)| !ledger.deleted.contains(id) && !ledger.maybe_deleted.contains(id))
        .expect("an acknowledged live message");
    sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(message)
        .execute(&mut conn)
        .await
        .expect("lose a write");
    sqlx::query("UPDATE threads SET message_count = message_count + 1 WHERE id = $1")
        .bind(thread)
        .execute(&mut conn)
        .await
        .expect("skew a count");
    let half: Option<String> = sqlx::query_scalar(
        "DELETE FROM messages WHERE id = (SELECT id FROM messages \
         WHERE content::text LIKE '%init %' ORDER BY id LIMIT 1) RETURNING thread_id",
    )
    .fetch_optional(&mut conn)
    .await
    .expect("half-write a thread");
    let mut open = sqlx::PgConnection::connect(&db.direct_urls()[0])
        .await
        .expect("another connection");
    sqlx::raw_sql("BEGIN; SELECT 1")
        .execute(&mut open)
        .await
        .expect("a transaction left open");

    let found = invariant_violations(&weft.base, &secret, &ledger, db.direct_urls())
        .await
        .join("\n");
    assert!(
        found.contains(&format!("acknowledged message {message}")),
        "{found}"
    );
    assert!(found.contains(&format!("thread {thread}")), "{found}");
    assert!(found.contains("idle in transaction"), "{found}");
    if let Some(half) = half {
        assert!(
            found.contains(&format!("thread {half} half-written")),
            "{found}"
        );
    }
}
