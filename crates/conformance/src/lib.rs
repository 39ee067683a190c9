//! The adapter conformance suite: Weft's unit-of-work contract
//! (`weft_ports::uow`) written down once as executable cases, run by every
//! adapter against a real database.
//!
//! Layout:
//! - [`ConformanceTarget`]: what an adapter provides to be tested — its
//!   factory, a leak report, and its storage invariants.
//! - [`conformance_tests!`]: expands to one `#[tokio::test]` per case, so
//!   every case is its own named test in the adapter's test binary.
//! - [`cases`]: the cases themselves, each a `pub async fn` taking the
//!   target, grouped by concern (`crud`, `isolation`, `paging`,
//!   `transactions`, `cancellation`); callable on their own too.
//! - [`cancel`]: [`cancel::CancelAfterPolls`], the future wrapper that drops
//!   a use case after its k-th poll.
//! - [`app`]: the app's real use cases (`weft_app::App`) over the target's
//!   factory; the cancellation, storm, count and retry cases run these.
//! - [`scripts`]: small port-level sequences used to seed data.
//! - [`upgrade`]: rows in the first schema, and the check that they read
//!   back unchanged after the later migrations.
//! - [`fixtures`]: contexts, ids and sample objects.
//! - [`lifecycle`]: the data lifecycle's cases (expiry, purge, erase,
//!   export) over [`lifecycle::LifecycleTarget`], and
//!   [`lifecycle_tests!`].
//!
//! Architecture invariant: this crate depends on `weft-app`, `weft-ports`
//! and `weft-domain` only (plus tokio/futures to drive concurrency). It
//! knows no driver and no adapter: anything adapter-specific (counting busy
//! connections, checking counts in storage) comes through
//! [`ConformanceTarget`]. It is a dev-dependency of adapters, never a
//! runtime dependency of the service.
//!
//! # Wiring an adapter
//!
//! In the adapter's `tests/conformance.rs` (with `tokio` and
//! `weft-conformance` as dev-dependencies):
//!
//! ```no_run
//! use std::sync::Arc;
//! use weft_conformance::{ConformanceTarget, LeakReport};
//! use weft_ports::UnitOfWorkFactory;
//!
//! struct MyTarget; // the store on a fresh, empty database
//!
//! #[async_trait::async_trait]
//! impl ConformanceTarget for MyTarget {
//!     fn factory(&self) -> Arc<dyn UnitOfWorkFactory> { todo!() }
//!     fn serializable_factory(&self) -> Arc<dyn UnitOfWorkFactory> { todo!() }
//!     async fn leak_report(&self) -> LeakReport { todo!() }
//!     async fn invariant_violations(&self) -> Vec<String> { todo!() }
//! }
//!
//! /// A fresh target on an empty database; called once per test.
//! async fn make_target() -> MyTarget { todo!() }
//!
//! weft_conformance::conformance_tests!(make_target);
//! ```
//!
//! Every generated test runs on a multi-threaded tokio runtime, builds its
//! own target, runs one case, then asserts the target settled: no busy
//! connection, nothing idle in a transaction, every invariant holding.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weft_ports::UnitOfWorkFactory;

pub mod app;
pub mod cancel;
pub mod cases;
pub mod fixtures;
pub mod lifecycle;
pub mod scripts;
pub mod upgrade;

/// What an adapter's storage looks like from the outside right now: the
/// signals of a leaked connection or transaction. A clean report has every
/// count at zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// Connections checked out of the adapter's pool (pool size minus idle).
    pub busy_connections: u32,
    /// Server sessions of the service left inside a transaction with no
    /// statement running (PostgreSQL: `pg_stat_activity.state = 'idle in
    /// transaction'` for `application_name = 'weft'`). Adapters without
    /// server sessions report 0.
    pub idle_in_transaction: u32,
    /// Server sessions of the service still running a statement. Adapters
    /// without server sessions report 0.
    pub active_statements: u32,
}

impl LeakReport {
    /// Whether nothing is held: every connection idle or closed, no open
    /// transaction, no running statement.
    pub fn is_clean(&self) -> bool {
        self.busy_connections == 0 && self.idle_in_transaction == 0 && self.active_statements == 0
    }
}

/// How hard the load cases push this adapter. The defaults are the issue's
/// numbers; an adapter with a single writer may lower the concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Use cases run by the cancel storm (a random third of them cancelled).
    pub storm_use_cases: usize,
    /// Concurrent message creates plus deletes on one thread in the
    /// message-count case.
    pub count_writers: usize,
    /// Upper bound on the time any load case may take before it fails.
    pub time_bound: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            storm_use_cases: 1_000,
            count_writers: 50,
            time_bound: Duration::from_secs(120),
        }
    }
}

/// An adapter under test, on a fresh, empty database of its own.
///
/// The suite only ever reaches storage through [`ConformanceTarget::factory`];
/// the other methods are the adapter's own view of its storage, used to
/// check that nothing leaked and nothing was half-written.
#[async_trait]
pub trait ConformanceTarget: Send + Sync + 'static {
    /// The factory under test, configured as in production.
    fn factory(&self) -> Arc<dyn UnitOfWorkFactory>;

    /// A factory on the same database whose read-write units of work run at
    /// the adapter's strongest isolation (PostgreSQL: SERIALIZABLE), so that
    /// conflicting read-modify-write units of work fail with
    /// `PortError::Conflict` (or are serialized) instead of losing an update.
    /// An adapter whose writers are always serialized returns its normal
    /// factory.
    fn serializable_factory(&self) -> Arc<dyn UnitOfWorkFactory>;

    /// The current leak signals. Called after a short settle period, so an
    /// adapter that cleans up in a spawned task has had time to do so.
    async fn leak_report(&self) -> LeakReport;

    /// Every storage invariant that does not hold, described for a test
    /// failure message; empty when all hold. At least: each thread's stored
    /// `message_count` equals its number of live messages; no live message
    /// belongs to an archived thread; every stored row re-parses into the
    /// domain types.
    async fn invariant_violations(&self) -> Vec<String>;

    /// How hard the load cases push this adapter.
    fn load(&self) -> Load {
        Load::default()
    }

    /// Whether two read-modify-write units of work from
    /// [`ConformanceTarget::serializable_factory`] that both read before
    /// either writes make one of them fail with `PortError::Conflict`
    /// (PostgreSQL SERIALIZABLE: yes). An adapter whose writers wait for
    /// each other instead (SQLite) returns `false`; the retry case then
    /// checks only the final state.
    fn serializable_conflicts(&self) -> bool {
        true
    }
}

/// Waits (up to 10 s) for the target's leak report to come back clean, then
/// asserts it is clean and that every invariant holds. `when` names the
/// moment checked, for the failure message.
///
/// # Panics
/// When a leak persists or an invariant is violated: this is a test helper.
pub async fn assert_settled(target: &dyn ConformanceTarget, when: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut report = target.leak_report().await;
    while !report.is_clean() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = target.leak_report().await;
    }
    assert!(
        report.is_clean(),
        "{when}: storage did not settle: {report:?}"
    );
    let violations = target.invariant_violations().await;
    assert!(
        violations.is_empty(),
        "{when}: invariants violated: {violations:#?}"
    );
}

/// Expands to one `#[tokio::test]` per conformance case, each building its
/// own target with `$make` (an `async fn() -> impl ConformanceTarget`),
/// running the case, then asserting the target settled (no leaks, all
/// invariants). The calling crate needs `tokio` (features `macros`,
/// `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            threads_round_trip_through_every_thread_port,
            messages_round_trip_through_every_message_port,
            append_refuses_an_id_below_the_threads_newest_and_the_retry_above_it_succeeds,
            adjust_message_count_counts_and_never_moves_updated_at_backwards,
            deleting_a_deleted_last_message_is_not_found,
            archiving_a_thread_hides_it_and_its_messages,
            idempotency_keys_are_claimed_once_and_replaced_after_expiry,
            another_owner_sees_nothing_and_can_change_nothing,
            cursors_of_other_lists_and_owners_are_invalid_and_deleted_ones_stay_valid,
            paging_sees_every_object_once_while_another_task_inserts,
            before_pages_hold_the_nearest_objects_in_both_orders,
            after_and_before_together_select_the_window_between_them,
            a_pager_sees_every_object_created_while_it_pages,
            metadata_merge_round_trips,
            a_dropped_unit_of_work_leaves_no_writes,
            an_explicit_rollback_leaves_no_writes,
            a_read_only_unit_of_work_cannot_write,
            a_single_read_reads_once_and_cannot_write,
            message_count_is_exact_after_concurrent_creates_and_deletes,
            create_message_cancelled_at_every_await_point_leaves_nothing_behind,
            create_thread_cancelled_at_every_await_point_leaves_nothing_behind,
            delete_message_cancelled_at_every_await_point_leaves_nothing_behind,
            a_cancel_storm_leaves_no_leak_and_exact_counts,
            conflicting_serializable_units_of_work_both_complete_through_retry,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let target: ::std::sync::Arc<dyn $crate::ConformanceTarget> =
                    ::std::sync::Arc::new($make().await);
                $crate::cases::$case(::std::sync::Arc::clone(&target)).await;
                $crate::assert_settled(&*target, ::core::stringify!($case)).await;
            }
        )*
    };
}
