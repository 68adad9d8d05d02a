"""Example consumer of the Tern stream (stream records v1 and v2, docs/stream-record.md).

Reads every shard of a Kinesis stream with boto3, parses each record, keeps gap records (records
with `"kind": "gap"`: `seq`s an install will never send, see docs/stream-record.md, Gaps) apart
from events, and drops duplicates by `event_id` and `gap_id` (delivery is at-least-once: a
resent batch writes its events and gaps again, with the same ids). A production consumer would use KCL, Lambda or Flink and keep its dedup state in
a store with a TTL longer than the SDK's retry horizon; this one keeps a bounded in-memory set,
which is enough for duplicates that arrive close together (they do: a resend follows its
original within minutes).

A v2 stream writes what the events of an upload share (clocks, context, SDK, collector) once,
in a batch record (`"kind": "batch"`) that the collector writes before the upload's event
records, on the same shard; each v2 event record carries the `batch_id` to join on. This
consumer keeps the batch records seen last and hands each v2 event over joined with its batch
record: the same dict a v1 record gives, but for `v` (2). A v2 event whose batch record it has
not kept (a reader started mid-stream, another writer) is a problem: counted and reported on
stderr with its `event_id`, never handed over half. A stream may hold both versions.

    python tools/consumer/tern_consumer.py --stream events --endpoint http://127.0.0.1:4567
    python tools/consumer/tern_consumer.py --stream events --gaps   # gap records instead
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, OrderedDict
from typing import Callable, Iterable, Iterator

import boto3


class Deduper:
    """Remembers the last `capacity` event ids; `first(id)` is True the first time an id is seen."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first(self, event_id: str) -> bool:
        if event_id in self.seen:
            self.seen.move_to_end(event_id)
            self.duplicates += 1
            return False
        self.seen[event_id] = None
        if len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        return True


def kinesis_client(endpoint: str | None, region: str = "us-east-1"):
    """A boto3 Kinesis client; `endpoint` points it at a local server."""
    kwargs = {"region_name": region}
    if endpoint:
        kwargs.update(endpoint_url=endpoint, aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("kinesis", **kwargs)


def records(client, stream: str, idle_polls: int = 3, poll_interval: float = 0.2) -> Iterator[dict]:
    """Yields every stream record of every shard from the start, until each shard has answered
    `idle_polls` empty pages in a row (a live consumer would poll forever)."""
    shards = client.list_shards(StreamName=stream)["Shards"]
    iterators = {
        s["ShardId"]: client.get_shard_iterator(
            StreamName=stream, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for s in shards
    }
    idle = {shard: 0 for shard in iterators}
    while iterators:
        for shard, iterator in list(iterators.items()):
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                yield json.loads(record["Data"])
            next_iterator = page.get("NextShardIterator")
            if not page["Records"]:
                idle[shard] += 1
            else:
                idle[shard] = 0
            if next_iterator is None or idle[shard] >= idle_polls:
                del iterators[shard]
            else:
                iterators[shard] = next_iterator
        time.sleep(poll_interval)


RECORD_VERSION = 1
"""Self-contained records: one per event, one per gap report."""
RECORD_VERSION_2 = 2
"""An upload's shared fields once, in a batch record; event records joined to it on `batch_id`."""
RECORD_VERSIONS = (RECORD_VERSION, RECORD_VERSION_2)
"""The versions this consumer reads; records of any other version are skipped (and counted)."""

GAP_KIND = "gap"
BATCH_KIND = "batch"

BATCH_SHARED_FIELDS = ("sent_at", "received_at", "context", "sdk", "collector_id")
"""What a v2 event record leaves to its batch record (`protocol/src/record.rs`, `EventRecordV2::join`)."""
BATCH_MATCHED_FIELDS = ("install_id", "app_id")
"""In both records: a batch record whose value differs is not the event's (`EventRecordV2::join`)."""

MAX_BATCH_RECORDS = 10_000
"""Batch records kept for joining. One is needed only until the upload's event records are read,
and the collector writes them right after it, on the same shard: what lies between is other
uploads written at the same time, far fewer than this (and a resent upload repeats its batch
record). About 3 KB each parsed (a ~450 B document), so at most ~30 MB."""


class BatchRecords:
    """The last `capacity` v2 batch records seen, by `batch_id`, to join event records with."""

    def __init__(self, capacity: int = MAX_BATCH_RECORDS) -> None:
        self.capacity = capacity
        self.kept: OrderedDict[str, dict] = OrderedDict()

    def keep(self, batch: dict) -> str | None:
        """Keeps `batch` (a resent upload's newer batch record replaces the older one: it is the
        one its events follow); a string says why it cannot be kept."""
        missing = [f for f in ("batch_id", *BATCH_MATCHED_FIELDS, *BATCH_SHARED_FIELDS) if f not in batch]
        if missing:
            return f"batch record {batch.get('batch_id')} lacks {', '.join(missing)}"
        self.kept[batch["batch_id"]] = batch
        self.kept.move_to_end(batch["batch_id"])
        if len(self.kept) > self.capacity:
            self.kept.popitem(last=False)
        return None

    def join(self, event: dict) -> tuple[dict | None, str | None]:
        """The whole event: the v2 `event` record with its batch record's shared fields, the dict a
        v1 record gives but for `v`; or None and why (no batch record kept, or one of another
        install or app)."""
        batch = self.kept.get(event.get("batch_id"))
        if batch is None:
            return None, "no_batch_record"
        if any(event.get(f) != batch[f] for f in BATCH_MATCHED_FIELDS):
            return None, "batch_record_mismatch"
        joined = dict(event)
        joined.update((f, batch[f]) for f in BATCH_SHARED_FIELDS)
        return joined, None


class Problems:
    """Records this consumer could not hand over (a v2 event without its batch record, a batch
    record it cannot use), counted by reason and reported on stderr: never dropped silently."""

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))

    def add(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        self.report(f"tern_consumer: {reason}: {detail}")

    def total(self) -> int:
        return sum(self.counts.values())


def read_records(
    documents: Iterable[dict],
    handle: Callable[[dict], None],
    deduper: Deduper | None = None,
    handle_gap: Callable[[dict], None] | None = None,
    batches: BatchRecords | None = None,
    problems: Problems | None = None,
    skipped: Counter[str] | None = None,
) -> Deduper:
    """Calls `handle` once per distinct event of `documents` (parsed stream records, in shard
    order), a v2 event joined with its batch record, and `handle_gap` (if given) once per distinct
    gap record. A record with a `kind` is never an event. Records of an unknown version or kind
    are skipped and counted in `skipped` (by `v` or `kind`); v2 events that cannot be joined are
    reported to `problems`."""
    deduper = deduper or Deduper()
    batches = batches if batches is not None else BatchRecords()
    problems = problems if problems is not None else Problems()
    skipped = skipped if skipped is not None else Counter()
    for record in documents:
        version = record.get("v")
        if version not in RECORD_VERSIONS:
            skipped[f"v={version!r}"] += 1  # a future format version: handle it explicitly, never guess
            continue
        kind = record.get("kind")
        if kind == GAP_KIND:
            if handle_gap is not None and deduper.first("gap:" + record["gap_id"]):
                handle_gap(record)
            continue
        if version == RECORD_VERSION_2 and kind == BATCH_KIND:
            why = batches.keep(record)
            if why is not None:
                problems.add("bad_batch_record", why)
            continue
        if kind is not None:
            skipped[f"kind={kind}"] += 1  # a kind this consumer does not know: never read it as an event
            continue
        if version == RECORD_VERSION_2:
            joined, why = batches.join(record)
            if joined is None:
                if record.get("event_id") in deduper.seen:
                    deduper.first(record["event_id"])  # handed over already: a duplicate, nothing lost
                else:
                    problems.add(why, f"event_id {record.get('event_id')} (batch_id {record.get('batch_id')})")
                continue
            record = joined
        if deduper.first(record["event_id"]):
            handle(record)
    return deduper


def consume(
    client,
    stream: str,
    handle: Callable[[dict], None],
    deduper: Deduper | None = None,
    handle_gap: Callable[[dict], None] | None = None,
    batches: BatchRecords | None = None,
    problems: Problems | None = None,
    skipped: Counter[str] | None = None,
    **kw,
) -> Deduper:
    """`read_records` over every record of the stream (`records`, whose options `kw` are)."""
    return read_records(records(client, stream, **kw), handle, deduper, handle_gap, batches, problems, skipped)


def missing_seqs(events: list[dict], gaps: list[dict]) -> dict[str, int]:
    """Per install, the `seq`s up to the highest one known that are neither received nor covered
    by a gap record: events not arrived (yet). Counts covered seqs, not gap `count`s, since a seq
    may be both received and in a `storage_lost` gap."""
    accounted: dict[str, set[int]] = {}
    for event in events:
        accounted.setdefault(event["install_id"], set()).add(event["seq"])
    for gap in gaps:
        seqs = accounted.setdefault(gap["install_id"], set())
        for r in gap["ranges"]:
            seqs.update(range(r["first"], r["last"] + 1))
    return {install: max(seqs) - len(seqs) for install, seqs in accounted.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", required=True)
    parser.add_argument("--endpoint", help="Kinesis endpoint URL (a local server); default: AWS")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--gaps", action="store_true", help="print gap records instead of events")
    args = parser.parse_args()
    client = kinesis_client(args.endpoint, args.region)
    emit = lambda r: print(json.dumps(r), flush=True)  # noqa: E731
    ignore = lambda r: None  # noqa: E731
    problems, skipped = Problems(), Counter()
    deduper = consume(
        client, args.stream, ignore if args.gaps else emit, handle_gap=emit if args.gaps else ignore,
        problems=problems, skipped=skipped,
    )
    print(
        f"{len(deduper.seen)} events and gaps, {deduper.duplicates} duplicates dropped, "
        f"{sum(skipped.values())} records skipped {dict(skipped)}, "
        f"{problems.total()} problems {dict(problems.counts)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
