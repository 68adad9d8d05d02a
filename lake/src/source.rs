//! Reading every shard of a Kinesis stream: ListShards, parents before their children after a
//! reshard, one iterator per shard resumed after its checkpoint, backoff on throttling.
//!
//! Retries: the AWS SDK's standard mode retries a call a few times by itself; on top of that a
//! shard that is throttled or fails is only read again later ([`crate::limits`]), never given up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use futures_util::future::join_all;

use crate::checkpoint::{self, Position};
use crate::error::{Error, Result};
use crate::limits::{
    GET_RECORDS_LIMIT, IDLE_POLL, SHARD_REFRESH_INTERVAL, THROTTLE_BACKOFF_MAX,
    THROTTLE_BACKOFF_MIN,
};
use crate::metrics::Metrics;

/// A Kinesis client for `region`, at `endpoint` if set (a local Kinesis server), with the
/// standard AWS credential chain.
pub async fn client(region: &str, endpoint: Option<&str>) -> Client {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_owned()));
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}

/// Which shards this worker reads: worker `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker's number, from 0.
    pub index: u32,
    /// How many workers split the shards.
    pub count: u32,
}

impl Worker {
    /// Whether this worker reads `shard_id`. Shards are dealt by the number in their id
    /// (`shardId-000000000007`), so every worker computes the same split.
    pub fn owns(&self, shard_id: &str) -> bool {
        let number = shard_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| {
                shard_id
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            });
        number % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

/// One Kinesis record as read.
#[derive(Debug, Clone)]
pub struct KinesisRecord {
    /// Its sequence number.
    pub sequence_number: String,
    /// When Kinesis accepted it.
    pub arrived_at: DateTime<Utc>,
    /// The partition key it was written with.
    pub partition_key: String,
    /// Its data.
    pub data: Vec<u8>,
}

/// What one GetRecords call on a shard gave.
#[derive(Debug)]
pub struct ShardRead {
    /// The shard.
    pub shard_id: String,
    /// Its new records, in order.
    pub records: Vec<KinesisRecord>,
    /// Whether the shard is closed and now read to its end.
    pub ended: bool,
}

#[derive(Debug)]
struct ShardState {
    parents: Vec<String>,
    /// What the table holds for it.
    committed: Option<Position>,
    /// How far it was read (in memory, ahead of `committed` until the next commit).
    read_to: Option<Position>,
    iterator: Option<String>,
    next_poll: Instant,
    backoff: Duration,
    /// It returned nothing new and Kinesis said it is at the tip.
    caught_up: bool,
}

/// Every shard of one stream, as far as this worker reads them.
pub struct Source {
    client: Client,
    stream: String,
    worker: Worker,
    shards: BTreeMap<String, ShardState>,
    refreshed: Instant,
}

enum Outcome {
    Records {
        records: Vec<KinesisRecord>,
        next: Option<String>,
        lag_ms: Option<i64>,
    },
    Throttled,
    Expired,
    Failed(String),
}

impl Source {
    /// Lists the stream's shards and reads each one's checkpoint from `table`.
    pub async fn open(
        client: Client,
        stream: &str,
        worker: Worker,
        table: &DeltaTable,
    ) -> Result<Self> {
        let mut source = Self {
            client,
            stream: stream.to_owned(),
            worker,
            shards: BTreeMap::new(),
            refreshed: Instant::now(),
        };
        source.refresh(table).await?;
        Ok(source)
    }

    /// Reads the shard list again: new shards (from a reshard) start from their checkpoint, if
    /// any, else from their start; shards of other workers get their checkpoint from `table`,
    /// so that children know when their parents are done.
    pub async fn refresh(&mut self, table: &DeltaTable) -> Result<()> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let page = request.send().await.map_err(|e| {
                Error::Kinesis(format!("ListShards {}: {}", self.stream, error_text(&e)))
            })?;
            for shard in page.shards() {
                let parents: Vec<String> = shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect();
                listed.push((shard.shard_id().to_owned(), parents));
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for (id, parents) in listed {
            let owned = self.worker.owns(&id);
            match self.shards.get_mut(&id) {
                Some(state) => {
                    if !owned {
                        state.committed = checkpoint::read(table, &self.stream, &id).await?;
                    }
                }
                None => {
                    let committed = checkpoint::read(table, &self.stream, &id).await?;
                    self.shards.insert(
                        id,
                        ShardState {
                            parents,
                            read_to: committed.clone(),
                            committed,
                            iterator: None,
                            next_poll: Instant::now(),
                            backoff: Duration::ZERO,
                            caught_up: false,
                        },
                    );
                }
            }
        }
        self.refreshed = Instant::now();
        Ok(())
    }

    /// Whether the shard list is due to be read again.
    pub fn refresh_due(&self) -> bool {
        self.refreshed.elapsed() >= SHARD_REFRESH_INTERVAL
    }

    fn done(&self, shard: &str) -> bool {
        match self.shards.get(shard) {
            // Gone from the list: past the stream's retention, nothing left to read.
            None => true,
            Some(s) => s.read_to == Some(Position::End) || s.committed == Some(Position::End),
        }
    }

    /// Shards this worker reads now: its own, not finished, whose parents are finished.
    fn readable(&self) -> Vec<String> {
        self.shards
            .iter()
            .filter(|(id, s)| {
                self.worker.owns(id)
                    && s.read_to != Some(Position::End)
                    && s.parents.iter().all(|p| self.done(p))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the next shard is due to be read.
    pub fn next_due(&self) -> Option<Instant> {
        let readable = self.readable();
        readable
            .iter()
            .filter_map(|id| self.shards.get(id))
            .map(|s| s.next_poll)
            .min()
    }

    /// Whether every shard this worker can read is read to its tip (or its end).
    pub fn caught_up(&self) -> bool {
        self.readable()
            .iter()
            .filter_map(|id| self.shards.get(id))
            .all(|s| s.caught_up)
    }

    /// Reads every shard that is due, all at once; records come back in order per shard.
    pub async fn poll(&mut self, metrics: &Metrics) -> Vec<ShardRead> {
        let now = Instant::now();
        let due: Vec<String> = self
            .readable()
            .into_iter()
            .filter(|id| self.shards.get(id).is_some_and(|s| s.next_poll <= now))
            .collect();
        let calls = due.iter().map(|id| {
            let state = self.shards.get(id);
            let iterator = state.and_then(|s| s.iterator.clone());
            let after = match state.and_then(|s| s.read_to.clone()) {
                Some(Position::After(seq)) => Some(seq),
                _ => None,
            };
            read_shard(&self.client, &self.stream, id, iterator, after)
        });
        let outcomes = join_all(calls).await;
        let mut reads = Vec::new();
        let mut ended_any = false;
        for (id, outcome) in due.into_iter().zip(outcomes) {
            let Some(state) = self.shards.get_mut(&id) else {
                continue;
            };
            match outcome {
                Outcome::Records {
                    records,
                    next,
                    lag_ms,
                } => {
                    state.backoff = Duration::ZERO;
                    if let Some(last) = records.last() {
                        state.read_to = Some(Position::After(last.sequence_number.clone()));
                    }
                    let ended = next.is_none();
                    if ended {
                        state.read_to = Some(Position::End);
                        ended_any = true;
                    }
                    state.iterator = next;
                    if let Some(lag) = lag_ms {
                        metrics.shard_lag(&id, lag);
                    }
                    let full = records.len() >= usize::try_from(GET_RECORDS_LIMIT).unwrap_or(0);
                    state.caught_up = ended || (records.is_empty() && lag_ms.unwrap_or(0) == 0);
                    state.next_poll = if records.is_empty() {
                        now + IDLE_POLL
                    } else if full {
                        now
                    } else {
                        // Within a shard's 5 reads a second, shared with other consumers.
                        now + IDLE_POLL / 5
                    };
                    if !records.is_empty() || ended {
                        reads.push(ShardRead {
                            shard_id: id,
                            records,
                            ended,
                        });
                    }
                }
                Outcome::Throttled => {
                    metrics.read_throttled.inc();
                    state.backoff =
                        (state.backoff * 2).clamp(THROTTLE_BACKOFF_MIN, THROTTLE_BACKOFF_MAX);
                    state.next_poll = now + state.backoff;
                    tracing::debug!(shard = %id, backoff_ms = state.backoff.as_millis() as u64, "throttled");
                }
                Outcome::Expired => {
                    state.iterator = None;
                }
                Outcome::Failed(error) => {
                    metrics.read_errors.inc();
                    state.iterator = None;
                    state.backoff =
                        (state.backoff * 2).clamp(THROTTLE_BACKOFF_MIN, THROTTLE_BACKOFF_MAX);
                    state.next_poll = now + state.backoff;
                    tracing::warn!(shard = %id, %error, "GetRecords failed; reading the shard again later");
                }
            }
        }
        if ended_any {
            // A closed shard's children may be new to us.
            self.refreshed = Instant::now() - SHARD_REFRESH_INTERVAL;
        }
        reads
    }

    /// The positions read so far that `table` does not hold yet, per shard.
    pub fn progress(&self) -> Vec<(String, Position)> {
        self.shards
            .iter()
            .filter(|(_, s)| s.read_to.is_some() && s.read_to != s.committed)
            .filter_map(|(id, s)| Some((id.clone(), s.read_to.clone()?)))
            .collect()
    }

    /// Marks `positions` as committed.
    pub fn committed(&mut self, positions: &[(String, Position)]) {
        for (id, position) in positions {
            if let Some(state) = self.shards.get_mut(id) {
                state.committed = Some(position.clone());
            }
        }
    }

    /// Every shard listed.
    pub fn shard_ids(&self) -> Vec<String> {
        self.shards.keys().cloned().collect()
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

fn error_text<E: std::fmt::Debug + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(s) => format!("{:?}", s.err()),
        other => other.to_string(),
    }
}

async fn read_shard(
    client: &Client,
    stream: &str,
    shard: &str,
    iterator: Option<String>,
    after: Option<String>,
) -> Outcome {
    let iterator = match iterator {
        Some(it) => it,
        None => {
            let request = client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard);
            let request = match &after {
                Some(seq) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq),
                None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            match request.send().await {
                Ok(out) => match out.shard_iterator() {
                    Some(it) => it.to_owned(),
                    // No iterator: the shard is closed and past its end.
                    None => {
                        return Outcome::Records {
                            records: Vec::new(),
                            next: None,
                            lag_ms: None,
                        }
                    }
                },
                Err(e) => return classify(&e),
            }
        }
    };
    match client
        .get_records()
        .shard_iterator(iterator)
        .limit(GET_RECORDS_LIMIT)
        .send()
        .await
    {
        Ok(page) => {
            let records = page
                .records()
                .iter()
                .map(|r| KinesisRecord {
                    sequence_number: r.sequence_number().to_owned(),
                    arrived_at: r
                        .approximate_arrival_timestamp()
                        .and_then(|t| t.to_millis().ok())
                        .and_then(DateTime::<Utc>::from_timestamp_millis)
                        .unwrap_or_else(Utc::now),
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    data: r.data().as_ref().to_vec(),
                })
                .collect();
            Outcome::Records {
                records,
                next: page.next_shard_iterator().map(str::to_owned),
                lag_ms: page.millis_behind_latest(),
            }
        }
        Err(e) => classify(&e),
    }
}

fn classify<E, R>(e: &SdkError<E, R>) -> Outcome
where
    E: std::fmt::Debug + std::error::Error + aws_sdk_kinesis::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(s) = e {
        match s.err().code() {
            Some("ProvisionedThroughputExceededException" | "LimitExceededException") => {
                return Outcome::Throttled
            }
            Some("ExpiredIteratorException") => return Outcome::Expired,
            _ => {}
        }
    }
    Outcome::Failed(error_text(e))
}
