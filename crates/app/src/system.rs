//! Production implementations of the clock, id and title ports.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use uuid::Uuid;
use weft_domain::{derive_title, MessageId, ThreadId, Timestamp, Title};
use weft_ports::{Clock, IdSource, TitleError, TitleGenerator};

/// The system clock, in whole Unix seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            // A clock before 1970 is a broken host; 0 keeps ids and times sane.
            .unwrap_or(0);
        Timestamp::from_unix_seconds(secs)
    }
}

/// UUIDv7 ids, strictly increasing within the process: when two ids land in
/// the same millisecond and the random part would go backwards, the
/// previous value plus one is used instead. That keeps "ids sort in creation
/// order" true for every id this process mints.
#[derive(Debug, Default)]
pub struct V7Ids {
    last: Mutex<u128>,
}

impl V7Ids {
    /// A fresh UUIDv7 value greater than every value minted before and than
    /// `floor`: when the clock has not moved past them (same millisecond, or
    /// another process's clock ahead), the larger plus one.
    fn next(&self, floor: u128) -> Uuid {
        let fresh = Uuid::now_v7().as_u128();
        // A poisoned lock only means another thread panicked mid-update of a
        // plain integer; its value is still a valid lower bound.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let bound = (*last).max(floor);
        let value = if fresh > bound {
            fresh
        } else {
            bound.wrapping_add(1)
        };
        *last = value;
        Uuid::from_u128(value)
    }
}

impl IdSource for V7Ids {
    fn thread_id(&self, above: Option<&ThreadId>) -> ThreadId {
        ThreadId::from_uuid(self.next(above.map_or(0, ThreadId::value)))
    }

    fn message_id(&self, above: Option<&MessageId>) -> MessageId {
        MessageId::from_uuid(self.next(above.map_or(0, MessageId::value)))
    }
}

/// The default title generator: the domain's deterministic derivation.
/// Never fails, never waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct DerivedTitles;

#[async_trait]
impl TitleGenerator for DerivedTitles {
    async fn generate(&self, first_user_text: &str) -> Result<Title, TitleError> {
        Ok(derive_title(first_user_text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_minted_in_a_burst_strictly_increase() {
        let ids = V7Ids::default();
        let minted: Vec<MessageId> = (0..10_000).map(|_| ids.message_id(None)).collect();
        assert!(minted.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ids_are_minted_above_an_id_from_a_clock_far_ahead() {
        let ids = V7Ids::default();
        let ahead = ThreadId::parse("thread_ffffffffffff7000800000000000aaaa").unwrap();
        let next = ids.thread_id(Some(&ahead));
        assert!(next > ahead, "{next} must sort after {ahead}");
        let after = ids.thread_id(None);
        assert!(after > next, "and the process keeps counting from there");
    }

    #[test]
    fn the_clock_reads_a_plausible_time() {
        assert!(SystemClock.now().unix_seconds() > 1_700_000_000);
    }
}
