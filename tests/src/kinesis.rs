//! The local Kinesis server (kinesalite, from `node_modules`) and a blocking client for it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use aws_sdk_kinesis::Client;
use chrono::{DateTime, Utc};
use tern_protocol::{GapRecord, StreamRecord};

use crate::process::Listening;
use crate::records::{Document, Joiner};
use crate::workspace_root;

/// A kinesalite server on a free 127.0.0.1 port, with a client for it.
pub struct Kinesalite {
    _process: Listening,
    /// Its endpoint URL.
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// A record read from the stream, as bytes.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Its shard.
    pub shard_id: String,
    /// Its partition key.
    pub partition_key: String,
    /// Its data.
    pub data: Vec<u8>,
    /// When Kinesis accepted it.
    pub arrived_at: DateTime<Utc>,
}

/// A stream record read from the stream.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// The record, parsed.
    pub record: StreamRecord,
    /// When Kinesis accepted it (readable from then on).
    pub arrived_at: DateTime<Utc>,
    /// Its shard.
    pub shard_id: String,
    /// Its partition key.
    pub partition_key: String,
}

impl Kinesalite {
    /// Starts kinesalite (`npm ci` must have run: `make test` does it).
    pub fn start() -> Result<Self> {
        let root = workspace_root();
        if !root.join("node_modules/kinesalite").is_dir() {
            bail!(
                "node_modules/kinesalite is missing: run `npm ci` (make test does) in {}",
                root.display()
            );
        }
        let mut command = Command::new("node");
        command
            .current_dir(&root)
            .arg("tools/kinesalite.js")
            .arg("0");
        let process = Listening::spawn(command, "kinesalite")?;
        let endpoint = format!("http://{}", process.addr);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = runtime.block_on(client(&endpoint));
        Ok(Self {
            _process: process,
            endpoint,
            runtime,
            client,
        })
    }

    /// The Kinesis client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a future on the harness's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Creates a stream with `shards` shards and waits until it is active.
    pub fn create_stream(&self, name: &str, shards: i32) -> Result<()> {
        self.block_on(async {
            self.client
                .create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send()
                .await
                .with_context(|| format!("CreateStream {name}"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let summary = self
                    .client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await?;
                let status = summary
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone());
                if status == Some(StreamStatus::Active) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("stream {name} not active after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// A reader of every shard of `stream` from its start.
    pub fn reader(&self, stream: &str) -> Result<StreamReader<'_>> {
        StreamReader::new(self, stream)
    }
}

/// A client for a local Kinesis endpoint, with static test credentials.
pub async fn client(endpoint: &str) -> Client {
    let credentials = aws_sdk_kinesis::config::Credentials::new(
        "tern-test",
        "tern-test",
        None,
        None,
        "tern-tests",
    );
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await;
    Client::new(&config)
}

/// Reads every shard of a stream from its start, remembering where it stopped (async, for any
/// Kinesis endpoint).
pub struct ShardReader {
    client: Client,
    iterators: Vec<(String, Option<String>)>,
}

impl ShardReader {
    /// Opens iterators at the start (TRIM_HORIZON) of every shard of `stream`.
    pub async fn open(client: Client, stream: &str) -> Result<Self> {
        let shards = client.list_shards().stream_name(stream).send().await?;
        let mut iterators = Vec::new();
        for shard in shards.shards() {
            let it = client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?;
            iterators.push((
                shard.shard_id().to_owned(),
                it.shard_iterator().map(str::to_owned),
            ));
        }
        Ok(Self { client, iterators })
    }

    /// Raw data of every record added since the last call.
    pub async fn read_raw(&mut self) -> Result<Vec<RawRecord>> {
        let mut out = Vec::new();
        for (shard_id, iterator) in self.iterators.iter_mut() {
            while let Some(it) = iterator.clone() {
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await?;
                *iterator = page.next_shard_iterator().map(str::to_owned);
                let records = page.records();
                for r in records {
                    let arrived_at = r
                        .approximate_arrival_timestamp()
                        .and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.to_millis().ok()?))
                        .unwrap_or_else(Utc::now);
                    out.push(RawRecord {
                        shard_id: shard_id.clone(),
                        partition_key: r.partition_key().unwrap_or_default().to_owned(),
                        data: r.data().as_ref().to_vec(),
                        arrived_at,
                    });
                }
                if records.is_empty()
                    || page.millis_behind_latest() == Some(0) && records.len() < 10_000
                {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Reads a stream of the harness's kinesalite (blocking).
pub struct StreamReader<'a> {
    kinesis: &'a Kinesalite,
    shards: ShardReader,
    /// Gap records read so far (every copy), kept apart from the events.
    gaps: Vec<GapRecord>,
    /// Joins v2 events with their batch records.
    joiner: Joiner,
}

impl<'a> StreamReader<'a> {
    fn new(kinesis: &'a Kinesalite, stream: &str) -> Result<Self> {
        let shards = kinesis.block_on(ShardReader::open(kinesis.client().clone(), stream))?;
        Ok(Self {
            kinesis,
            shards,
            gaps: Vec::new(),
            joiner: Joiner::default(),
        })
    }

    /// Every gap record read so far (`read` keeps them apart from the events), copies included.
    pub fn gaps(&self) -> &[GapRecord] {
        &self.gaps
    }

    /// Raw data of every record added since the last call, parsed or not.
    pub fn read_raw(&mut self) -> Result<Vec<RawRecord>> {
        self.kinesis.block_on(self.shards.read_raw())
    }

    /// Every event record added since the last call (v2 events joined with their batch
    /// records); gap records go to [`Self::gaps`]. A document that is not a stream record, or a
    /// v2 event read before its batch record, is an error.
    pub fn read(&mut self) -> Result<Vec<ReadRecord>> {
        let mut events = Vec::new();
        for raw in self.read_raw()? {
            let RawRecord {
                shard_id,
                partition_key,
                data,
                arrived_at,
            } = raw;
            let record = match self.joiner.document(&data)? {
                Document::Gap(gap) => {
                    self.gaps.push(*gap);
                    continue;
                }
                Document::Batch(_) => continue,
                Document::Event(record) => *record,
            };
            events.push(ReadRecord {
                record,
                arrived_at,
                shard_id,
                partition_key,
            });
        }
        Ok(events)
    }

    /// Reads until `done(all records so far)` holds or `timeout` passes; returns everything read.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[ReadRecord]) -> bool,
    ) -> Result<Vec<ReadRecord>> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            all.extend(self.read()?);
            if done(&all) || Instant::now() > deadline {
                return Ok(all);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
