//! Kafka's error codes, as the broker returns them in a response field.
//!
//! The code table and which codes are retriable come from `kafka-protocol`'s
//! [`ResponseError`]; this module adds what kferry decides from a code (refresh metadata
//! first?) and prints codes the way Kafka operators know them: `NOT_LEADER_OR_FOLLOWER (6)`.

use std::fmt;

pub use kafka_protocol::ResponseError;

/// A non-zero error code returned by a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub ResponseError);

impl ErrorCode {
    /// `None` for 0 (no error).
    pub fn from_code(code: i16) -> Option<Self> {
        ResponseError::try_from_code(code).map(Self)
    }

    /// Whether the same request may succeed if sent again (as Kafka's `RetriableException`).
    ///
    /// CONCURRENT_TRANSACTIONS is not in Kafka's retriable class, but its producer retries
    /// it after a short backoff: the coordinator is still completing the previous
    /// transaction. Treating it as fatal would abort and re-initialise for nothing.
    pub fn is_retriable(self) -> bool {
        self.0.is_retriable() || self.0 == ResponseError::ConcurrentTransactions
    }

    /// Whether the error means our view of leaders or topics is stale, so metadata must be
    /// refreshed before the retry is sent to the right broker.
    pub fn needs_metadata_refresh(self) -> bool {
        matches!(
            self.0,
            ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable
                | ResponseError::FencedLeaderEpoch
                | ResponseError::UnknownLeaderEpoch
                | ResponseError::NotController
                | ResponseError::KafkaStorageError
        )
    }

    pub fn code(self) -> i16 {
        self.0.code()
    }
}

impl ErrorCode {
    /// The name Kafka's docs and logs use, `NOT_LEADER_OR_FOLLOWER`, without the number
    /// (`UNKNOWN_ERROR_CODE` for a code kferry does not know).
    pub fn name(self) -> String {
        if let ResponseError::Unknown(_) = self.0 {
            return "UNKNOWN_ERROR_CODE".to_string();
        }
        // `ResponseError` displays as `NotLeaderOrFollower`; Kafka's docs and logs say
        // `NOT_LEADER_OR_FOLLOWER`, which is what operators search for.
        let camel = self.0.to_string();
        let mut name = String::with_capacity(camel.len() + 8);
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_kafka_docs() {
        assert_eq!(ErrorCode::from_code(6).unwrap().to_string(), "NOT_LEADER_OR_FOLLOWER (6)");
        assert_eq!(ErrorCode::from_code(10).unwrap().name(), "MESSAGE_TOO_LARGE");
        assert_eq!(ErrorCode::from_code(-1).unwrap().to_string(), "UNKNOWN_SERVER_ERROR (-1)");
        assert_eq!(ErrorCode::from_code(9999).unwrap().to_string(), "UNKNOWN_ERROR_CODE (9999)");
        assert!(ErrorCode::from_code(0).is_none());
    }

    #[test]
    fn stale_metadata_codes_ask_for_refresh() {
        for code in [3, 5, 6, 74] {
            let error = ErrorCode::from_code(code).unwrap();
            assert!(error.needs_metadata_refresh() && error.is_retriable(), "{error}");
        }
        assert!(!ErrorCode::from_code(36).unwrap().is_retriable());
    }
}
