//! What an error from librdkafka means for the record it concerns: the one decision that says
//! whether a record may ever be marked done without Kafka having stored it.
//!
//! The rule is a short allow-list: only errors that concern this one record and that no retry can
//! cure may skip it (logged and counted); anything else — an error we do not know included — keeps
//! the record unacknowledged, so its offset never moves past it.

use rdkafka::error::RDKafkaErrorCode;

/// What to do with a record after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Kafka will never take this record, whatever we do: log it, count it, settle it so the
    /// file's offset moves on (policy `kafka.on_fatal_error = "skip"`).
    Skip,
    /// Send it again (after a pause when the enqueue itself failed).
    Retry,
    /// The producer is unusable (idempotent producer's fatal error): the record stays unsettled,
    /// reading stops and the agent exits non-zero so that systemd starts it afresh.
    Fatal,
    /// Taken back by the producer at shutdown: unsettled, read again at the next start.
    Purged,
}

/// The disposition of `code` (`None`: an error librdkafka gave no code for).
pub fn classify(code: Option<RDKafkaErrorCode>) -> Disposition {
    use RDKafkaErrorCode::*;
    match code {
        // Too large for the broker (its message.max.bytes), topic not authorized, invalid topic name:
        // per record and permanent.
        Some(MessageSizeTooLarge | TopicAuthorizationFailed | InvalidTopic) => Disposition::Skip,
        Some(Fatal) => Disposition::Fatal,
        Some(PurgeQueue | PurgeInflight) => Disposition::Purged,
        // Unknown topic or partition included: the topic may be created; the lines wait.
        _ => Disposition::Retry,
    }
}

/// A label for the `logagent_delivery_errors_total{kind}` metric.
pub fn kind(code: Option<RDKafkaErrorCode>) -> String {
    code.map_or_else(|| "other".to_owned(), |c| format!("{c:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode::*;

    #[test]
    fn only_per_record_permanent_errors_skip() {
        for code in [MessageSizeTooLarge, TopicAuthorizationFailed, InvalidTopic] {
            assert_eq!(classify(Some(code)), Disposition::Skip, "{code:?}");
        }
    }

    #[test]
    fn fatal_and_purged_never_settle() {
        assert_eq!(classify(Some(Fatal)), Disposition::Fatal);
        assert_eq!(classify(Some(PurgeQueue)), Disposition::Purged);
        assert_eq!(classify(Some(PurgeInflight)), Disposition::Purged);
    }

    /// Errors that used to be treated as permanent (and so skipped, with the offset saved) but that
    /// concern the producer or the cluster, not the record: they must never mark a record done.
    #[test]
    fn producer_and_cluster_errors_and_unknown_ones_are_retried() {
        for code in [
            ClusterAuthorizationFailed,
            OutOfOrderSequenceNumber,
            UnknownTopicOrPartition,
            UnknownTopic,
            UnknownPartition,
            InvalidRequiredAcks,
            PolicyViolation,
            InvalidRecord,
            InvalidMessage,
            MessageTimedOut,
            RequestTimedOut,
            AllBrokersDown,
            NotLeaderForPartition,
            Unknown,
        ] {
            assert_eq!(classify(Some(code)), Disposition::Retry, "{code:?}");
        }
        assert_eq!(classify(None), Disposition::Retry);
    }
}
