//! The per-request context.

use std::time::Instant;

use weft_domain::{RequestId, UserId};

/// Who is asking and for which request: built once per request by the HTTP
/// layer from the verified token, then passed by reference to the use case
/// and to [`crate::UnitOfWorkFactory::begin`]. Immutable: nothing can swap
/// the user of a request half-way. Nothing global or long-lived holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    user: UserId,
    request_id: RequestId,
    deadline: Option<Instant>,
}

impl RequestContext {
    /// A context for `user`'s request `request_id`, to finish by `deadline` if given.
    pub fn new(user: UserId, request_id: RequestId, deadline: Option<Instant>) -> Self {
        Self {
            user,
            request_id,
            deadline,
        }
    }

    /// The owner every query of this request is scoped to.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The request's correlation id, for logs.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// When the request's work must be done by, if bounded.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}
