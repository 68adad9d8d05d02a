"""Example consumer of the Tern stream (stream record v1, docs/stream-record.md).

Reads every shard of a Kinesis stream with boto3, parses each record, keeps gap records (records
with `"kind": "gap"`: `seq`s an install will never send, see docs/stream-record.md, Gaps) apart
from events, and drops duplicates by `event_id` and `gap_id` (delivery is at-least-once: a
resent batch writes its events and gaps again, with the same ids). A production consumer would use KCL, Lambda or Flink and keep its dedup state in
a store with a TTL longer than the SDK's retry horizon; this one keeps a bounded in-memory set,
which is enough for duplicates that arrive close together (they do: a resend follows its
original within minutes).

    python tools/consumer/tern_consumer.py --stream events --endpoint http://127.0.0.1:4567
    python tools/consumer/tern_consumer.py --stream events --gaps   # gap records instead
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict
from typing import Callable, Iterator

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


GAP_KIND = "gap"


def consume(
    client,
    stream: str,
    handle: Callable[[dict], None],
    deduper: Deduper | None = None,
    handle_gap: Callable[[dict], None] | None = None,
    **kw,
) -> Deduper:
    """Calls `handle` once per distinct event of the stream, and `handle_gap` (if given) once per
    distinct gap record. A record with a `kind` is never an event."""
    deduper = deduper or Deduper()
    for record in records(client, stream, **kw):
        if record.get("v") != 1:
            continue  # a future format version: handle it explicitly, never guess
        kind = record.get("kind")
        if kind == GAP_KIND:
            if handle_gap is not None and deduper.first("gap:" + record["gap_id"]):
                handle_gap(record)
            continue
        if kind is not None:
            continue  # a record kind this consumer does not know: skip it, never read it as an event
        if deduper.first(record["event_id"]):
            handle(record)
    return deduper


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
    deduper = consume(
        client, args.stream, ignore if args.gaps else emit, handle_gap=emit if args.gaps else ignore
    )
    print(f"{len(deduper.seen)} events and gaps, {deduper.duplicates} duplicates dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
