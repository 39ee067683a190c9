//! Time as the API shows it: whole Unix seconds.

use serde::{Deserialize, Serialize};

/// A point in time in whole seconds since the Unix epoch, as every API
/// timestamp is. Produced by the clock port; the domain never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Wraps Unix seconds.
    pub const fn from_unix_seconds(secs: i64) -> Self {
        Self(secs)
    }

    /// The Unix seconds this timestamp stands for.
    pub const fn unix_seconds(self) -> i64 {
        self.0
    }

    /// This timestamp moved back by `secs` seconds (saturating), e.g. for an expiry cut-off.
    pub const fn minus_seconds(self, secs: i64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}
