"""Spark (pyspark and delta-spark in local mode) on a lake the real pipeline wrote, checked
against `tern-lake sql` on the same lake in the same test: per-day counts and distinct ids, every
row's typed values, the checkout funnel of docs/analysis.md (its SQL as printed there, run by
both engines, and the example's DataFrame code), the `gaps` and `rejected` tables; and a
Structured Streaming read of `events` that sees exactly the rows a later ingest commits.

The lake: kinesalite and a real tern-collector (tools/consumer/local_pipeline.py), uploads of
events created on several days (uploaded late: each lands in the day it happened), every upload
sent twice as after a lost acknowledgement, then `tern-lake ingest --stop-when-caught-up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/consumer"))
sys.path.insert(0, str(ROOT / "tools/spark"))

import example  # noqa: E402
from local_pipeline import local_pipeline  # noqa: E402

KEY = "spark-test-key"
TERN_LAKE = ROOT / "target/debug/tern-lake"


# --- The pipeline: uploads through the collector, ingest, and `tern-lake sql` -----------------


def stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# One "today" for the whole run, so a run across midnight still puts its events in the days
# it meant.
TODAY = datetime.now(timezone.utc).date()


def days_ago(days: int, minute: int = 0) -> datetime:
    """Noon UTC `days` days before TODAY (plus `minute` minutes): far from midnight, so the
    collector's clock correction (milliseconds here) keeps the event in that day."""
    return datetime.combine(TODAY - timedelta(days=days), time(12, minute), tzinfo=timezone.utc)


@dataclass
class Phone:
    """One install's uploads: events numbered by `seq` from 1, as the SDK numbers them."""

    install_id: str
    next_seq: int = 1
    sent: list[dict] = field(default_factory=list)

    def batch(self, steps: list[tuple[str, datetime]], gaps: list[dict] | None = None) -> dict:
        events = []
        for name, created_at in steps:
            events.append({
                "event_id": str(uuid.uuid4()),
                "seq": self.next_seq,
                "name": name,
                "created_at": stamp(created_at),
                "properties": {"screen": "product", "price": 10 + self.next_seq},
            })
            self.next_seq += 1
        body = {
            "batch_id": str(uuid.uuid4()),
            "install_id": self.install_id,
            "sent_at": stamp(datetime.now(timezone.utc)),
            "sdk": {"name": "spark-test", "version": "0"},
            "context": {"app": {"id": "dev.tern.spark", "version": "3.1.0"},
                        "os": {"name": "Android", "version": "15"}},
            "events": events,
        }
        if gaps:
            body["gaps"] = gaps
        self.sent.append(body)
        return body


def post(url: str, body: dict) -> None:
    r = requests.post(f"{url}/v1/batch", data=json.dumps(body), timeout=30,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def upload_twice(url: str, body: dict) -> set[str]:
    """Posts a batch, then again under a new batch_id (as another collector instance would
    write a resend): every event is in the stream twice. The events' ids."""
    post(url, body)
    post(url, dict(body, batch_id=str(uuid.uuid4())))
    return {e["event_id"] for e in body["events"]}


def ingest(endpoint: str, stream: str, lake: Path) -> dict:
    """`tern-lake ingest --stop-when-caught-up`; the summary it prints last."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
               AWS_EC2_METADATA_DISABLED="true", TERN_LAKE_LOG="warn")
    env.pop("AWS_PROFILE", None)
    done = subprocess.run(
        [str(TERN_LAKE), "ingest", "--stream", stream, "--lake", str(lake), "--kinesis-endpoint",
         endpoint, "--region", "us-east-1", "--stop-when-caught-up"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=300, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def sql(lake: Path, query: str) -> list[dict]:
    """`tern-lake sql --format json`: the rows as dicts."""
    done = subprocess.run([str(TERN_LAKE), "sql", "--lake", str(lake), "--format", "json", query],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 0, f"tern-lake sql {query!r}: {done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def docs_query(heading: str) -> str:
    """The first SQL block under `heading` in docs/analysis.md, as printed (so the docs' query is
    the one both engines run)."""
    docs = (ROOT / "docs/analysis.md").read_text()
    section = docs[docs.index(heading):]
    start = section.index("```sql\n") + len("```sql\n")
    return section[start:section.index("```", start)].strip().rstrip(";")


FUNNEL_SQL = docs_query("### A checkout funnel")
PLAIN_COLUMNS = ["event_id", "name", "install_id", "seq", "user_id", "app_version", "os_name",
                 "properties", "shard_id", "sequence_number", "sub_sequence"]
TIMESTAMP_COLUMNS = ["event_time", "created_at", "sent_at", "received_at", "arrived_at",
                     "ingested_at"]


# --- The lake ---------------------------------------------------------------------------------


@dataclass
class Lake:
    path: Path
    endpoint: str
    stream: str
    url: str
    sent_ids: set[str]
    phones: dict[str, Phone]
    summary: dict


@pytest.fixture(scope="module")
def spark():
    session = example.spark_session("tern-spark-test")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    with local_pipeline(KEY, "shop", shards=2) as (client, stream, url):
        phones: dict[str, Phone] = {}

        def phone(install: str) -> Phone:
            return phones.setdefault(install, Phone(install))

        sent: set[str] = set()
        # The funnel's cases, created over the last five days and ten days ago and uploaded
        # now: late events, each in the partition of the day it happened.
        for i in range(3):  # viewed only
            sent |= upload_twice(url, phone(f"viewer-{i}").batch([("screen_view", days_ago(4, i))]))
        for i in range(3):  # viewed, then added to the cart
            sent |= upload_twice(url, phone(f"adder-{i}").batch(
                [("screen_view", days_ago(4, i)), ("search", days_ago(4, 30)),
                 ("add_to_cart", days_ago(3, i))]))
        for i in range(4):  # viewed, added, checked out: one day each
            sent |= upload_twice(url, phone(f"buyer-{i}").batch(
                [("screen_view", days_ago(3, i)), ("add_to_cart", days_ago(2, i)),
                 ("checkout", days_ago(1, i))]))
        for i in range(2):  # added to the cart before viewing: not a funnel step
            sent |= upload_twice(url, phone(f"backwards-{i}").batch(
                [("add_to_cart", days_ago(2, i)), ("screen_view", days_ago(1, i)),
                 ("checkout", days_ago(1, 30))]))
        for i in range(2):  # outside the funnel's 7 days
            sent |= upload_twice(url, phone(f"old-{i}").batch(
                [("screen_view", days_ago(10, i)), ("add_to_cart", days_ago(10, 30))]))
        # Events of today, and a gap report: seqs 1-2 of this install were dropped on the phone.
        gap = {"gap_id": str(uuid.uuid4()), "reason": "cap_count", "ranges": [{"first": 1, "last": 2}],
               "count": 2, "at": stamp(days_ago(1))}
        p = phone("today-0")
        p.next_seq = 3
        now = datetime.now(timezone.utc)
        sent |= upload_twice(url, p.batch([("screen_view", now), ("button_tap", now)], gaps=[gap]))
        # A record no collector would write: `rejected`.
        client.put_record(StreamName=stream, Data=b"not json", PartitionKey="bad")

        path = tmp_path_factory.mktemp("spark") / "lake"
        endpoint = client.meta.endpoint_url
        summary = ingest(endpoint, stream, path)
        yield Lake(path, endpoint, stream, url, sent, phones, summary)


# --- The comparisons --------------------------------------------------------------------------


def sql_ids(lake: Path) -> set[str]:
    return {r["event_id"] for r in sql(lake, "SELECT event_id FROM events")}


def assert_spark_agrees(spark, lake: Path) -> dict[str, int]:
    """Every answer Spark gives on `lake` is `tern-lake sql`'s; returns the rows per day."""
    events = example.read_events(spark, str(lake))

    days = {str(r["event_date"]): (r["events"], r["distinct_ids"])
            for r in example.per_day(events).collect()}
    expected_days = {
        r["day"]: (r["events"], r["distinct_ids"])
        for r in sql(lake, "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS events, "
                           "count(DISTINCT event_id) AS distinct_ids FROM events GROUP BY event_date")
    }
    assert days == expected_days

    # Every row with its typed values: timestamps as microseconds since the epoch (UTC), so a
    # reader that shifted them by a time zone or cut their precision would differ.
    spark_columns = [*PLAIN_COLUMNS, "CAST(event_date AS STRING)",
                     *(f"unix_micros({c})" for c in TIMESTAMP_COLUMNS)]
    # DataFusion casts a timestamp to its count of units, microseconds in the lake.
    sql_columns = [*PLAIN_COLUMNS, "CAST(event_date AS VARCHAR)",
                   *(f"CAST({c} AS BIGINT)" for c in TIMESTAMP_COLUMNS)]
    spark_rows = sorted(tuple(r) for r in events.selectExpr(*spark_columns).collect())
    select = ", ".join(f"{c} AS c{i}" for i, c in enumerate(sql_columns))
    # (JSON lines leave a null out of its row.)
    sql_rows = sorted(tuple(r.get(f"c{i}") for i in range(len(sql_columns)))
                      for r in sql(lake, f"SELECT {select} FROM events"))
    assert spark_rows == sql_rows

    # The funnel: the docs' SQL on both engines, and the example's DataFrame code.
    events.createOrReplaceTempView("events")
    [expected_funnel] = sql(lake, FUNNEL_SQL)
    assert spark.sql(FUNNEL_SQL).collect()[0].asDict() == expected_funnel
    assert example.funnel(events).collect()[0].asDict() == expected_funnel

    for table in ("gaps", "rejected"):
        [count] = sql(lake, f"SELECT count(*) AS n FROM {table}")
        rows = spark.read.format("delta").load(example.table_path(str(lake), table)).collect()
        assert len(rows) == count["n"], table
    return {day: n for day, (n, _) in expected_days.items()}


def test_batch_read_agrees_with_tern_lake_sql(spark, lake):
    summary = lake.summary
    # The lake exercises what it should: every event and the gap report arrived twice and were
    # kept once; the bad record was rejected.
    assert summary["rows_written"] == len(lake.sent_ids), summary
    assert summary["gaps"] == 1, summary
    assert summary["duplicates_removed"] == len(lake.sent_ids) + 1, summary
    assert summary["rejected"] == 1, summary
    assert sql_ids(lake.path) == lake.sent_ids

    per_day = assert_spark_agrees(spark, lake.path)
    assert len(per_day) >= 5, per_day
    [funnel] = sql(lake.path, FUNNEL_SQL)
    assert funnel["viewed"] > funnel["added_to_cart"] > funnel["checked_out"] > 0, funnel


@contextlib.contextmanager
def memory_stream(spark, lake: Path, name: str, trigger_seconds: float = 0):
    """A Structured Streaming query reading `events` into the memory table `name`; yields a
    function that waits until the query has read every commit there is and returns the
    `event_id`s it has seen so far (all of them, repeats included)."""
    writer = (example.events_stream(spark, str(lake)).select("event_id")
              .writeStream.format("memory").queryName(name))
    if trigger_seconds:
        writer = writer.trigger(processingTime=f"{trigger_seconds} seconds")
    query = writer.start()

    def seen() -> list[str]:
        query.processAllAvailable()
        return [r["event_id"] for r in spark.sql(f"SELECT event_id FROM {name}").collect()]

    try:
        yield seen
    finally:
        query.stop()


def test_stream_sees_exactly_the_rows_a_later_ingest_commits(spark, lake):
    with memory_stream(spark, lake.path, "events_seen") as seen:
        before = seen()
        # A stream starts with the table's rows when it starts, each once.
        table_before = sql_ids(lake.path)
        assert sorted(before) == sorted(table_before)
        days_before = {r["day"] for r in sql(
            lake.path, "SELECT DISTINCT CAST(event_date AS VARCHAR) AS day FROM events")}

        # More uploads, each sent twice: late events in old days that already have rows (an
        # offline phone) and a resend of batches the table already holds.
        late = Phone("late-0")
        new = upload_twice(lake.url, late.batch(
            [("screen_view", days_ago(4, 50)), ("add_to_cart", days_ago(4, 51)),
             ("checkout", days_ago(3, 52))]))
        new |= upload_twice(lake.url, lake.phones["viewer-0"].batch([("search", days_ago(1, 40))]))
        for install in ("buyer-0", "backwards-1"):
            upload_twice(lake.url, dict(lake.phones[install].sent[0], batch_id=str(uuid.uuid4())))
        summary = ingest(lake.endpoint, lake.stream, lake.path)
        assert summary["rows_written"] == len(new), summary

        after = seen()
        assert len(after) == len(set(after)), "no row is streamed twice"
        streamed = set(after) - set(before)
        assert streamed == sql_ids(lake.path) - table_before
        assert streamed == new
        ids = ", ".join(f"'{i}'" for i in sorted(new))
        new_days = sql(lake.path, "SELECT DISTINCT CAST(event_date AS VARCHAR) AS day FROM events "
                                  f"WHERE event_id IN ({ids})")
        assert {r["day"] for r in new_days} <= days_before, "the new rows went to existing days"
    # A batch read after the new commit agrees too (the funnel gained the late install).
    assert_spark_agrees(spark, lake.path)


# delta-rs writes a Parquet checkpoint of the log every 100 versions (its default
# `delta.checkpointInterval`, which the lake keeps): version 99 is the first.
CHECKPOINT_VERSION = 99


def test_spark_reads_past_a_checkpoint_delta_rs_wrote(spark, lake):
    """A lake that runs for a day has many log checkpoints (one every 100 commits, ~17 min at
    the default 10 s commit interval): Spark's snapshot starts from the newest, and a stream
    running while one is written still sees every new row once."""
    log = lake.path / "events/_delta_log"
    assert not (log / "_last_checkpoint").exists()
    # Spark's default trigger would run a micro-batch per commit below; one every few seconds
    # is what a job on a lake would do, and leaves the machine to the ingests.
    with memory_stream(spark, lake.path, "events_across_checkpoint", trigger_seconds=5) as seen:
        before = seen()
        phone, new = Phone("many-commits"), set()
        # One ingest run with new rows, one commit; now and then a resend of rows already in.
        for run in range(CHECKPOINT_VERSION + 1):
            if (log / "_last_checkpoint").exists():
                break
            day = days_ago(1 + run % 5, run % 60)
            new |= upload_twice(lake.url, phone.batch([("screen_view", day)]))
            if run % 10 == 0:
                upload_twice(lake.url, phone.sent[0])
            ingest(lake.endpoint, lake.stream, lake.path)
        checkpoint = json.loads((log / "_last_checkpoint").read_text())
        assert checkpoint["version"] == CHECKPOINT_VERSION, checkpoint
        after = seen()
        assert len(after) == len(set(after)), "no row is streamed twice"
        assert set(after) - set(before) == new
    assert_spark_agrees(spark, lake.path)
    # A stream started now begins from the checkpoint's snapshot.
    with memory_stream(spark, lake.path, "events_from_checkpoint") as seen:
        assert sorted(seen()) == sorted(sql_ids(lake.path))
