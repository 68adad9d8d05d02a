//! Shares PutRecords calls between concurrent uploads: each upload submits its records, and one
//! task packs whatever is waiting (up to the Kinesis request limits, lingering a moment for more)
//! into a call, then routes every record's result back to its upload. Under load a call carries
//! records of many uploads, so small batches do not each pay for a call of their own.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::record::Entry;
use super::service::{self, EntryResult};
use crate::limits::{MAX_RECORDS_PER_REQUEST, MAX_REQUEST_BYTES};
use crate::metrics::Metrics;

/// How long the dispatcher waits for more uploads to share a call that is not full: short
/// against a PutRecords round trip (tens of ms), long enough to gather concurrent uploads.
pub const LINGER: Duration = Duration::from_millis(2);

/// Queue length of submissions; uploads wait (asynchronously) when it is full.
const QUEUE: usize = 1024;

type Reply = Result<Vec<EntryResult>, String>;

struct Submission {
    stream: String,
    entries: Vec<Entry>,
    bytes: usize,
    reply: oneshot::Sender<Reply>,
}

/// Handle to the dispatcher task.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Submission>,
}

impl Dispatcher {
    /// Starts the dispatcher task on the current runtime.
    pub fn spawn(client: Client, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, client, metrics));
        Self { tx }
    }

    /// Writes `entries` (at most one request's worth) to `stream` in a shared call; the result
    /// per entry, in order, or the error of the whole call.
    pub async fn put(&self, stream: &str, entries: Vec<Entry>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            stream: stream.to_owned(),
            bytes: entries.iter().map(Entry::size).sum(),
            entries,
            reply,
        };
        self.tx
            .send(submission)
            .await
            .map_err(|_| "the PutRecords dispatcher stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the PutRecords call was dropped".to_owned())?
    }
}

async fn run(mut rx: mpsc::Receiver<Submission>, client: Client, metrics: Arc<Metrics>) {
    let mut carry: Option<Submission> = None;
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
        let mut group = vec![first];
        let linger_until = tokio::time::Instant::now() + LINGER;
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
            group.push(next);
        }
        let (client, metrics) = (client.clone(), Arc::clone(&metrics));
        tokio::spawn(async move {
            let all: Vec<Entry> = group
                .iter()
                .flat_map(|s| s.entries.iter().cloned())
                .collect();
            let result = service::put_records(&client, &stream, &all, &metrics).await;
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
        });
    }
}
