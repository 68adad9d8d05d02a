"""Latency of the cleansed stream: arrival in the raw stream to acceptance by the cleansed one.

Runs kinesalite, a real tern-collector and `tern-lake ingest --clean-stream` at the default
commit interval (10 s) on 127.0.0.1, posts batches at a steady rate for DURATION seconds, then
reads the cleansed stream and prints the latency percentiles as JSON: for each clean record,
its ApproximateArrivalTimestamp minus the `arrived_at` of the raw record it came from.

Usage: .venv/bin/python tools/lake/bench_clean.py [DURATION_S] [EVENTS_PER_S] [BINARY]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/consumer"))

import requests  # noqa: E402
from local_pipeline import local_pipeline  # noqa: E402

WRITE_KEY = "bench-key"


def batch(install: str, first_seq: int, n: int) -> dict:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "batch_id": str(uuid.uuid4()),
        "install_id": install,
        "sent_at": now,
        "sdk": {"name": "bench", "version": "0"},
        "context": {"app": {"version": "1.0"}},
        "events": [
            {"event_id": str(uuid.uuid4()), "seq": first_seq + i, "name": "screen_view",
             "created_at": now, "properties": {"i": first_seq + i, "screen": "home"}}
            for i in range(n)
        ],
    }


def read_all(client, stream: str) -> list[dict]:
    out = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        it = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = client.get_records(ShardIterator=it, Limit=10000)
            out.extend(page["Records"])
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            it = page.get("NextShardIterator")
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def main() -> int:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 60
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 200
    binary = sys.argv[3] if len(sys.argv) > 3 else str(ROOT / "target/debug/tern-lake")
    with local_pipeline(WRITE_KEY, "bench") as (client, stream, url), tempfile.TemporaryDirectory() as lake:
        clean = f"clean-{uuid.uuid4().hex}"
        client.create_stream(StreamName=clean, ShardCount=1)
        client.get_waiter("stream_exists").wait(StreamName=clean, WaiterConfig={"Delay": 0.1})
        endpoint = client.meta.endpoint_url
        env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
                   TERN_LAKE_LOG="warn,deltalake_core=off")
        ingest = subprocess.Popen(
            [binary, "ingest", "--stream", stream, "--lake", lake, "--kinesis-endpoint", endpoint,
             "--clean-stream", clean], env=env, stdout=subprocess.PIPE, text=True)
        session = requests.Session()
        per_batch = 20
        sent, seq, start = 0, 1, time.monotonic()
        while time.monotonic() - start < duration:
            due = int((time.monotonic() - start) * rate)
            while sent < due:
                body = batch("bench-install", seq, per_batch)
                r = session.post(f"{url}/v1/batch", json=body, headers={"authorization": f"Bearer {WRITE_KEY}"})
                r.raise_for_status()
                sent += per_batch
                seq += per_batch
            time.sleep(0.05)
        time.sleep(25)  # two commit intervals: everything sent is committed and published
        ingest.terminate()
        summary = json.loads(ingest.communicate(timeout=60)[0].strip().splitlines()[-1])
        records = read_all(client, clean)
        latencies = []
        for r in records:
            doc = json.loads(r["Data"])
            arrived = datetime.fromisoformat(doc["arrived_at"].replace("Z", "+00:00"))
            latencies.append((r["ApproximateArrivalTimestamp"] - arrived).total_seconds())
        latencies.sort()
        print(json.dumps({
            "sent": sent, "published": len(records), "distinct": len({json.loads(r["Data"])["event_id"] for r in records}),
            "summary": summary,
            "latency_s": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                          "max": latencies[-1] if latencies else None},
        }))
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
