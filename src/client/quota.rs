//! Broker quotas (KIP-13, KIP-219): a broker over a client's quota (`producer_byte_rate`,
//! `consumer_byte_rate`, `request_percentage`) answers at once with `throttle_time_ms` and
//! then stops reading that connection for that long. A client that keeps sending meanwhile
//! only piles requests up behind the muted socket, where their timeouts run out. So, as the
//! Java client does, a connection sends nothing until the throttle time has passed: the
//! requests wait in kferry, before their timeout starts, and nothing fails.
//!
//! [`Throttle`] is one connection's hold; [`QuotaWaits`] adds up what a cluster's brokers
//! asked for, for the metrics and a log line, so being slowed down by a quota is visible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::BrokerRef;

/// At most one log line per cluster this often while its brokers throttle kferry.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What one cluster's brokers asked kferry to wait, over all its connections.
#[derive(Debug, Default)]
pub struct QuotaWaits {
    throttle_millis: AtomicU64,
    logged_at: Mutex<Option<Instant>>,
}

impl QuotaWaits {
    /// The throttle times asked for, summed.
    pub fn throttled(&self) -> Duration {
        Duration::from_millis(self.throttle_millis.load(Ordering::Relaxed))
    }

    fn record(&self, broker: &BrokerRef, api: &str, millis: u64) {
        self.throttle_millis.fetch_add(millis, Ordering::Relaxed);
        let mut logged_at = self.logged_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            *logged_at = Some(Instant::now());
            tracing::info!(%broker, api, throttle_ms = millis, "the broker throttles kferry (a client quota): requests to it wait as long as it asks, nothing fails; counted in kferry_quota_throttle_seconds_total, logged at most once a minute");
        }
    }
}

/// One connection's hold: until when its broker asked it to send nothing.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// Tokio's clock, so that tests can run it paused.
    until: Mutex<Option<tokio::time::Instant>>,
}

impl Throttle {
    /// A response said `throttle_time_ms`: hold the connection that long from now.
    pub(super) fn throttled(&self, broker: &BrokerRef, api: &str, throttle_time_ms: i32, waits: &QuotaWaits) {
        let Ok(millis) = u64::try_from(throttle_time_ms) else { return };
        if millis == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(millis);
        let mut held = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = Some(held.map_or(until, |at| at.max(until)));
        drop(held);
        waits.record(broker, api, millis);
    }

    /// Waits until the hold, if any, has passed.
    pub(super) async fn wait(&self) {
        let until = *self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> BrokerRef {
        BrokerRef { cluster: "target".into(), node_id: Some(1), address: "127.0.0.1:9092".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_connection_waits_as_long_as_the_broker_asked_and_the_time_is_counted() {
        let waits = QuotaWaits::default();
        let throttle = Throttle::default();
        let started = tokio::time::Instant::now();
        throttle.wait().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        throttle.throttled(&broker(), "Produce", 1500, &waits);
        // A shorter throttle afterwards never shortens the hold.
        throttle.throttled(&broker(), "Produce", 200, &waits);
        throttle.throttled(&broker(), "Produce", 0, &waits);
        throttle.throttled(&broker(), "Produce", -1, &waits);
        throttle.wait().await;
        assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
        assert_eq!(waits.throttled(), Duration::from_millis(1700));
    }
}
