//! The bound on the memory held by uploads in progress (`max_in_flight_bytes`): bodies as they
//! are read, decoded batches, and records waiting for Kinesis. Each upload holds one
//! [`Reservation`] that follows what it holds and is released when dropped; growing past the
//! bound fails at once, and the upload is answered 503 `overloaded`. Once its records are built
//! the reservation is shared (`Arc`) with the PutRecords submissions and calls that carry them,
//! so it is released when the last of them is gone: an upload answered at its ack deadline may
//! still have records queued or in a call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

/// Bytes reserved by uploads in progress, and their bound.
#[derive(Debug)]
pub struct InFlightBudget {
    used: AtomicUsize,
    max: usize,
    gauge: Gauge,
}

impl InFlightBudget {
    /// A budget of `max` bytes, reporting its use to `gauge`.
    pub fn new(max: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
            gauge,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn publish(&self, used: usize) {
        self.gauge.set(i64::try_from(used).unwrap_or(i64::MAX));
    }
}

/// What one upload has reserved; released when dropped (when shared, by its last holder).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<InFlightBudget>,
    bytes: usize,
}

impl Reservation {
    /// An empty reservation against `budget`.
    pub fn new(budget: &Arc<InFlightBudget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Changes the reservation to `bytes`. Shrinking always succeeds; growing succeeds only if
    /// the budget stays within its bound (there is no exception for an idle collector: the
    /// configuration guarantees that the largest upload fits an empty budget). On failure the
    /// reservation is unchanged.
    pub fn resize(&mut self, bytes: usize) -> bool {
        let budget = &self.budget;
        let (old, max) = (self.bytes, budget.max);
        let updated = budget
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                let without = used.saturating_sub(old);
                let with = without.checked_add(bytes)?;
                (bytes <= old || with <= max).then_some(with)
            });
        match updated {
            Ok(previous) => {
                self.bytes = bytes;
                budget.publish(previous.saturating_sub(old).saturating_add(bytes));
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.resize(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_grow_within_the_bound_shrink_always_and_release_on_drop() {
        let gauge = Gauge::default();
        let budget = InFlightBudget::new(100, gauge.clone());
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        assert!(a.resize(60));
        assert!(!b.resize(41), "over the bound");
        assert_eq!(b.bytes(), 0, "unchanged on failure");
        assert!(b.resize(40));
        assert_eq!((budget.used(), gauge.get()), (100, 100));
        assert!(!a.resize(61));
        assert!(a.resize(10), "shrinking always works");
        assert!(b.resize(90));
        drop(b);
        assert_eq!((budget.used(), gauge.get()), (10, 10));
        // No exception for an idle collector: an upload larger than the whole bound never fits.
        drop(a);
        let mut c = Reservation::new(&budget);
        assert!(!c.resize(101));
        assert_eq!(budget.used(), 0);
    }
}
