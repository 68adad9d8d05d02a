"""Feeds a Kinesis stream (kinesalite) with stream record documents for `tools/bench-compact.sh`:
RATE events a second for SECONDS, in bursts every 100 ms; 70 % happened today, the rest up to
DAYS-1 days ago (phones that were offline), so a running `tern-lake ingest` with a short commit
interval leaves many small files in today's partition and in the old days' too.

    .venv/bin/python tools/lake/bench_compact_feed.py ENDPOINT STREAM [--seconds S] [--rate R] [--days D]

Creates the stream (2 shards) first. Prints {"events": N} at the end.
"""

import argparse
import datetime
import json
import random
import time
import uuid

import boto3

NAMES = ["screen_view", "button_tap", "add_to_cart", "checkout", "search"]


def stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def document(i: int, event_time: datetime.datetime, now: datetime.datetime) -> bytes:
    install = f"019ab7a0-0000-7000-8000-{i % 500:012d}"
    return json.dumps(
        {
            "v": 1,
            "event_id": str(uuid.uuid4()),
            "app_id": "shop",
            "install_id": install,
            "seq": i + 1,
            "name": NAMES[i % len(NAMES)],
            "created_at": stamp(event_time),
            "event_time": stamp(event_time),
            "sent_at": stamp(now),
            "received_at": stamp(now),
            "properties": {
                "i": i,
                "screen": "product",
                "item_id": f"sku-{i * 7919 % 100_000:05d}",
                "price": i % 500 + 0.99,
                "currency": "EUR",
                "quantity": i % 4 + 1,
            },
            "context": {
                "app": {"id": "com.example.shop", "version": "4.2.0", "build": "420"},
                "device": {"manufacturer": "Google", "model": "Pixel 9"},
                "os": {"name": "Android", "version": "15"},
                "locale": "de-CH",
                "timezone": "Europe/Zurich",
            },
            "batch_id": str(uuid.uuid4()),
            "sdk": {"name": "tern-sdk-kotlin", "version": "0.1.0"},
            "collector_id": "bench",
        }
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("endpoint")
    parser.add_argument("stream")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    client = boto3.client(
        "kinesis",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    client.create_stream(StreamName=args.stream, ShardCount=2)
    while client.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"][
        "StreamStatus"
    ] != "ACTIVE":
        time.sleep(0.1)
    rng = random.Random(7)
    per_burst = max(1, args.rate // 10)
    sent = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        started = time.monotonic()
        now = datetime.datetime.now(datetime.timezone.utc)
        entries = []
        for _ in range(per_burst):
            back = 0 if rng.random() < 0.7 else rng.randint(1, args.days - 1)
            event_time = now - datetime.timedelta(days=back, seconds=rng.randint(0, 3600))
            entries.append({"Data": document(sent, event_time, now), "PartitionKey": str(sent % 97)})
            sent += 1
        for chunk in range(0, len(entries), 500):
            answer = client.put_records(StreamName=args.stream, Records=entries[chunk : chunk + 500])
            if answer.get("FailedRecordCount"):
                raise SystemExit(f"{answer['FailedRecordCount']} records refused")
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    print(json.dumps({"events": sent}))


if __name__ == "__main__":
    main()
