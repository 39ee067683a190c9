//! Idempotent creates (API.md, "Safety guarantees"): one protocol, run in
//! one order by every create that honours an `Idempotency-Key`.
//!
//! Inside the creating unit of work:
//!
//! 1. **Replay.** A record of the owner's key younger than the replay
//!    window: same request → its response, and nothing is created; another
//!    request → [`AppError::IdempotencyKeyReused`].
//! 2. **Create.** The use case's own writes, rendering the response.
//! 3. **Record.** Claim the key with that response. The claim waits on the
//!    key's unique index for a concurrent duplicate still running; if that
//!    one committed meanwhile, the claim fails and the whole attempt is
//!    retried as a transient failure ([`Failure::Retry`]): its writes are
//!    rolled back, and the next attempt replays the other's response (or,
//!    if the other failed, creates afresh).
//!
//! Recording after the create, in the same transaction, is what makes the
//! record and the created objects commit together or not at all; only
//! successful responses are ever recorded.

use futures::future::BoxFuture;
use weft_domain::idempotency::REPLAY_WINDOW_SECS;
use weft_domain::{IdempotencyKey, RequestFingerprint, StoredResponse, Timestamp};
use weft_ports::{IdempotencyRecord, PortError, UnitOfWork};

use crate::tx::Failure;
use crate::AppError;

/// An `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: IdempotencyKey,
    /// Method, path and canonical body of the request.
    pub fingerprint: RequestFingerprint,
}

/// Runs `create` in `uow` under the protocol above, at time `now`.
///
/// # Errors
/// [`AppError::IdempotencyKeyReused`]; [`Failure::Retry`] when the key was
/// recorded by a concurrent request; whatever `create` fails with.
pub(crate) async fn run<'u, F>(
    uow: &'u mut dyn UnitOfWork,
    idem: &Idempotency,
    now: Timestamp,
    create: F,
) -> Result<StoredResponse, Failure>
where
    F: for<'a> FnOnce(&'a mut dyn UnitOfWork) -> BoxFuture<'a, Result<StoredResponse, Failure>>,
{
    let not_before = now.minus_seconds(REPLAY_WINDOW_SECS);
    match uow.find_idempotency(&idem.key, not_before).await? {
        Some(rec) if rec.fingerprint == idem.fingerprint => return Ok(rec.response),
        Some(_) => return Err(AppError::IdempotencyKeyReused.into()),
        None => {}
    }
    let response = create(&mut *uow).await?;
    let record = IdempotencyRecord {
        key: idem.key.clone(),
        fingerprint: idem.fingerprint.clone(),
        response: response.clone(),
        created_at: now,
    };
    match uow.insert_idempotency(&record, not_before).await {
        Ok(()) => Ok(response),
        Err(PortError::Duplicate) => Err(Failure::Retry),
        Err(e) => Err(e.into()),
    }
}
