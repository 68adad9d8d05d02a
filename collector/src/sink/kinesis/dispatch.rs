//! Shares PutRecords calls between concurrent uploads: each upload submits its records, and one
//! task packs whatever is waiting (up to the Kinesis request limits, lingering a moment for more)
//! into a call, then routes every record's result back to its upload. Under load a call carries
//! records of many uploads, so small batches do not each pay for a call of their own.
//!
//! A call refused whole as invalid (`ValidationException`) may be the fault of one upload's
//! records; the uploads that shared it are then sent again each in a call of its own, so that
//! one poisoned upload cannot fail the others.

use aws_sdk_kinesis::Client;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::limits::{
    DISPATCH_QUEUE, LEAD_MAX_CALLS_IN_FLIGHT, LINGER, MAX_RECORDS_PER_REQUEST, MAX_REQUEST_BYTES,
};
use super::record::Entry;
use super::service::{self, CallError, EntryResult};
use crate::in_flight::Reservation;
use crate::metrics::Metrics;

/// The whole-call error after which the uploads of a shared call are sent again one by one.
const ISOLATE_ON: &str = "ValidationException";

type Reply = Result<Vec<EntryResult>, CallError>;

/// How long a submission lets its call wait for others to share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linger {
    /// Up to [`LINGER`]: records that nothing else waits for but their upload's answer.
    Share,
    /// Not at all while the collector has time to spare: the records of a v2 upload, which
    /// writes its batch record and then its events in two rounds. The events wait for the
    /// batch record, so its call must not wait for others; and when that call returns, the
    /// events of every upload it carried are ready together and share the next call without
    /// waiting. So the upload waits once to share, not twice. A lead submission's call leaves at
    /// once with what is already waiting; while more than [`LEAD_MAX_CALLS_IN_FLIGHT`] calls
    /// are in flight it lingers like the others, so that a busy collector keeps its calls full.
    Lead,
}

struct Submission {
    stream: String,
    entries: Vec<Entry>,
    bytes: usize,
    linger: Linger,
    reply: oneshot::Sender<Reply>,
    /// The upload's reservation, held while the entries wait in the queue and while a call
    /// carries them: an upload that gave up (its handler dropped at the ack deadline) has not
    /// freed this memory yet, so new uploads must not be admitted into it.
    _reservation: Arc<Reservation>,
}

/// Handle to the dispatcher task.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Submission>,
}

impl Dispatcher {
    /// Starts the dispatcher task on the current runtime.
    pub fn spawn(client: Client, metrics: Arc<Metrics>) -> Self {
        Self::spawn_lingering(client, metrics, LINGER)
    }

    /// [`Dispatcher::spawn`], lingering `linger` instead of [`LINGER`].
    fn spawn_lingering(client: Client, metrics: Arc<Metrics>, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(DISPATCH_QUEUE);
        tokio::spawn(run(rx, client, metrics, linger));
        Self { tx }
    }

    /// Writes `entries` (at most one request's worth) to `stream` in a shared call; the result
    /// per entry, in order, or the error of the whole call. The submission holds `reservation`
    /// (the upload's) until its call is over, even if the caller stops waiting; `linger` says
    /// whether its call may wait for others.
    pub async fn put(
        &self,
        stream: &str,
        entries: Vec<Entry>,
        linger: Linger,
        reservation: &Arc<Reservation>,
    ) -> Reply {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            stream: stream.to_owned(),
            bytes: entries.iter().map(Entry::size).sum(),
            entries,
            linger,
            reply,
            _reservation: Arc::clone(reservation),
        };
        self.tx
            .send(submission)
            .await
            .map_err(|_| CallError::internal("the PutRecords dispatcher stopped"))?;
        answer
            .await
            .map_err(|_| CallError::internal("the PutRecords call was dropped"))?
    }
}

/// Whether a submission's call leaves at once: a lead submission's does while few calls are in
/// flight ([`LEAD_MAX_CALLS_IN_FLIGHT`]), and every other submission's lingers.
fn leads(linger: Linger, calls_in_flight: usize) -> bool {
    linger == Linger::Lead && calls_in_flight <= LEAD_MAX_CALLS_IN_FLIGHT
}

/// Counts a call in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run(
    mut rx: mpsc::Receiver<Submission>,
    client: Client,
    metrics: Arc<Metrics>,
    linger: Duration,
) {
    let mut carry: Option<Submission> = None;
    let in_flight = Arc::new(AtomicUsize::new(0));
    loop {
        let first = match carry.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => return,
            },
        };
        let stream = first.stream.clone();
        let (mut records, mut bytes) = (first.entries.len(), first.bytes);
        // A deadline already past still takes what is waiting: `timeout_at` polls the receiver
        // before it looks at the clock.
        let mut linger_until = tokio::time::Instant::now();
        if !leads(first.linger, in_flight.load(Ordering::Relaxed)) {
            linger_until += linger;
        }
        let mut group = vec![first];
        while records < MAX_RECORDS_PER_REQUEST {
            let next = match tokio::time::timeout_at(linger_until, rx.recv()).await {
                Ok(Some(s)) => s,
                Ok(None) | Err(_) => break,
            };
            if next.stream != stream
                || records + next.entries.len() > MAX_RECORDS_PER_REQUEST
                || bytes + next.bytes > MAX_REQUEST_BYTES
            {
                carry = Some(next);
                break;
            }
            records += next.entries.len();
            bytes += next.bytes;
            if leads(next.linger, in_flight.load(Ordering::Relaxed)) {
                linger_until = linger_until.min(tokio::time::Instant::now());
            }
            group.push(next);
        }
        let (client, metrics) = (client.clone(), Arc::clone(&metrics));
        let calling = InFlight::enter(&in_flight);
        tokio::spawn(async move {
            let _calling = calling;
            let all: Vec<Entry> = group
                .iter()
                .flat_map(|s| s.entries.iter().cloned())
                .collect();
            let result = service::put_records(&client, &stream, &all, &metrics).await;
            drop(all);
            match result {
                Err(e) if e.code == ISOLATE_ON && group.len() > 1 => {
                    tracing::warn!(
                        error = %e,
                        uploads = group.len(),
                        "a shared PutRecords call was refused as invalid; sending each upload alone"
                    );
                    let alone = group.into_iter().map(|s| {
                        let (client, metrics, stream) = (&client, &metrics, &stream);
                        async move {
                            let result =
                                service::put_records(client, stream, &s.entries, metrics).await;
                            let _ = s.reply.send(result);
                        }
                    });
                    futures_util::future::join_all(alone).await;
                }
                result => {
                    let mut offset = 0;
                    for s in group {
                        let n = s.entries.len();
                        let reply = match &result {
                            Ok(results) => Ok(results[offset..offset + n].to_vec()),
                            Err(e) => Err(e.clone()),
                        };
                        offset += n;
                        let _ = s.reply.send(reply);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Bytes as Body;
    use axum::http::StatusCode;
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::*;
    use std::time::Duration;

    use crate::sink::kinesis::{all_written, serve_test_endpoint, test_client as client};

    use crate::in_flight::InFlightBudget;
    use crate::metrics::CodeLabel;
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::sync::Semaphore;

    /// A Kinesis endpoint that refuses, as invalid, every PutRecords call holding a record with
    /// the partition key `poison`, and writes everything else; it counts the calls.
    async fn fake_kinesis(calls: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().fallback(move |body: Body| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                let records = request["Records"].as_array().cloned().unwrap_or_default();
                if records.iter().any(|r| r["PartitionKey"] == "poison") {
                    let error = json!({ "__type": "ValidationException", "message": "poisoned" });
                    return (StatusCode::BAD_REQUEST, error.to_string());
                }
                (StatusCode::OK, all_written(records.len()))
            }
        });
        serve_test_endpoint(app).await
    }

    fn entries(key: &str, n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                data: Bytes::from(format!("{{\"i\":{i}}}")),
                partition_key: key.into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_poisoned_upload_does_not_fail_the_uploads_sharing_its_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let endpoint = fake_kinesis(Arc::clone(&calls)).await;
        let metrics = Arc::new(Metrics::new());
        let dispatcher = Dispatcher::spawn(client(&endpoint), Arc::clone(&metrics));
        let reservation = Arc::new(Reservation::new(&InFlightBudget::new(0, Gauge::default())));
        let (good, bad, other) = tokio::join!(
            dispatcher.put("s", entries("install-1", 3), Linger::Share, &reservation),
            dispatcher.put("s", entries("poison", 2), Linger::Share, &reservation),
            dispatcher.put("s", entries("install-2", 1), Linger::Share, &reservation),
        );
        assert_eq!(good.unwrap(), vec![EntryResult::Written; 3]);
        assert_eq!(other.unwrap(), vec![EntryResult::Written; 1]);
        assert_eq!(bad.unwrap_err().code, "ValidationException");
        // One shared call, then one call per upload.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let failed = metrics
            .put_records_failed
            .get_or_create(&CodeLabel {
                code: "ValidationException".into(),
            })
            .get();
        assert_eq!(failed, 2, "each failed call counted once");
    }

    /// How long a test waits for an answer that must come at once: a hang guard, far over any
    /// call's time, far under the linger of the dispatchers that must not wait for it.
    const AT_ONCE: Duration = Duration::from_secs(60);

    /// A dispatcher writing to [`fake_kinesis`] whose calls linger an hour, so that only a
    /// lead submission gets an answer; the endpoint's count of calls, and an upload's
    /// reservation.
    async fn lingering_an_hour() -> (Dispatcher, Arc<AtomicUsize>, Arc<Reservation>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let endpoint = fake_kinesis(Arc::clone(&calls)).await;
        let metrics = Arc::new(Metrics::new());
        let dispatcher =
            Dispatcher::spawn_lingering(client(&endpoint), metrics, Duration::from_secs(3_600));
        let reservation = Arc::new(Reservation::new(&InFlightBudget::new(0, Gauge::default())));
        (dispatcher, calls, reservation)
    }

    #[tokio::test]
    async fn a_lead_submission_does_not_linger_while_the_collector_is_idle() {
        let (dispatcher, calls, reservation) = lingering_an_hour().await;
        let put = dispatcher.put("s", entries("install-1", 1), Linger::Lead, &reservation);
        let written = tokio::time::timeout(AT_ONCE, put)
            .await
            .expect("the lead submission waited for its call's linger");
        assert_eq!(written.unwrap(), vec![EntryResult::Written]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lead_submission_sends_the_call_it_joins_with_the_records_already_in_it() {
        let (dispatcher, calls, reservation) = lingering_an_hour().await;
        // `join!` polls in order: the shared submission is queued first and starts the call
        // (an hour's linger), then the lead joins it.
        let both = async {
            tokio::join!(
                dispatcher.put("s", entries("install-1", 3), Linger::Share, &reservation),
                dispatcher.put("s", entries("install-2", 1), Linger::Lead, &reservation),
            )
        };
        let (shared, lead) = tokio::time::timeout(AT_ONCE, both)
            .await
            .expect("the call a lead submission joined went on lingering");
        assert_eq!(shared.unwrap(), vec![EntryResult::Written; 3]);
        assert_eq!(lead.unwrap(), vec![EntryResult::Written]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for both");
    }

    #[test]
    fn a_lead_submission_lingers_like_the_others_while_calls_keep_the_collector_busy() {
        for in_flight in 0..=LEAD_MAX_CALLS_IN_FLIGHT {
            assert!(
                leads(Linger::Lead, in_flight),
                "{in_flight} calls in flight"
            );
            assert!(
                !leads(Linger::Share, in_flight),
                "{in_flight} calls in flight"
            );
        }
        assert!(!leads(Linger::Lead, LEAD_MAX_CALLS_IN_FLIGHT + 1));
    }

    /// A Kinesis endpoint that tells `arrived` of every PutRecords call, holds it until `release`
    /// has a permit, then writes its records.
    async fn held_kinesis(arrived: mpsc::UnboundedSender<()>, release: Arc<Semaphore>) -> String {
        let app = axum::Router::new().fallback(move |body: Body| {
            let (arrived, release) = (arrived.clone(), Arc::clone(&release));
            async move {
                let _ = arrived.send(());
                let _permit = release.acquire().await;
                let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                let records = request["Records"].as_array().cloned().unwrap_or_default();
                all_written(records.len())
            }
        });
        serve_test_endpoint(app).await
    }

    /// An upload dropped at its ack deadline while its records are in a PutRecords call used to
    /// release its bytes at once, admitting new uploads into memory still in use; the bytes now
    /// stay reserved until the call is over.
    #[tokio::test]
    async fn an_upload_that_gave_up_keeps_its_bytes_reserved_while_its_call_is_in_flight() {
        let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let endpoint = held_kinesis(arrived_tx, Arc::clone(&release)).await;
        let dispatcher = Dispatcher::spawn(client(&endpoint), Arc::new(Metrics::new()));
        let budget = InFlightBudget::new(1_000, Gauge::default());
        let mut reservation = Reservation::new(&budget);
        assert!(reservation.resize(600));
        let reservation = Arc::new(reservation);
        let upload = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move {
                dispatcher
                    .put("s", entries("install-1", 3), Linger::Share, &reservation)
                    .await
            }
        });
        arrived.recv().await.unwrap();
        // The upload gives up, as its handler does at the ack deadline.
        upload.abort();
        assert!(upload.await.unwrap_err().is_cancelled());
        assert_eq!(budget.used(), 600, "still reserved while the call runs");
        let mut next = Reservation::new(&budget);
        assert!(!next.resize(500), "no new upload admitted into that memory");

        release.add_permits(1);
        // The call ends soon after its answer; bounded so a leak fails instead of hanging.
        for _ in 0..1_000 {
            if budget.used() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(budget.used(), 0, "released once the call is over");
        assert!(next.resize(500));
    }
}
