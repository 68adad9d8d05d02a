"""The example consumer against the real collector and kinesalite: a batch sent twice (as the
SDK resends one whose acknowledgement was lost) is consumed once."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from tern_consumer import Deduper, consume, kinesis_client

ROOT = Path(__file__).resolve().parents[2]
KEY = "consumer-test-key"


def start(cmd, **kw):
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True, **kw)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), f"{cmd[0]} printed {line!r}"
    return proc, "http://" + line.removeprefix("listening on ")


@pytest.fixture()
def pipeline():
    kinesalite, endpoint = start(["node", "tools/kinesalite.js", "0"])
    stream = f"consumer-{uuid.uuid4().hex}"
    client = kinesis_client(endpoint)
    client.create_stream(StreamName=stream, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", TERN_LOG="warn")
    collector, url = start(
        [str(ROOT / "target/debug/tern-collector"), "--listen", "127.0.0.1:0", "--stream", stream,
         "--kinesis-endpoint", endpoint, "--write-key", KEY, "--app-id", "shop"],
        env=env,
    )
    yield client, stream, url
    collector.kill()
    kinesalite.kill()
    collector.wait()
    kinesalite.wait()


def batch(install, first_seq, n):
    return {
        "batch_id": str(uuid.uuid4()),
        "install_id": install,
        "sent_at": "2026-11-24T10:00:00.000Z",
        "sdk": {"name": "python-test", "version": "0"},
        "context": {"os": {"name": "Android"}},
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "seq": first_seq + i,
                "name": "screen_view",
                "created_at": "2026-11-24T09:59:59.000Z",
                "properties": {"i": i},
            }
            for i in range(n)
        ],
    }


def post(url, body):
    r = requests.post(f"{url}/v1/batch", data=json.dumps(body), timeout=30,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def test_duplicates_are_consumed_once(pipeline):
    client, stream, url = pipeline
    first = batch("install-a", 1, 20)
    post(url, first)
    post(url, first)  # resent: same batch_id, same events
    post(url, batch("install-a", 21, 5))
    post(url, batch("install-b", 1, 7))

    seen = []
    deduper = consume(client, stream, seen.append, Deduper(), poll_interval=0.05)

    assert len(seen) == 32
    assert deduper.duplicates == 20
    assert len({r["event_id"] for r in seen}) == 32
    by_install = {}
    for r in seen:
        by_install.setdefault(r["install_id"], []).append(r["seq"])
    # One install's events are on one shard, in order.
    assert by_install["install-a"] == list(range(1, 26))
    assert by_install["install-b"] == list(range(1, 8))
    assert all(r["app_id"] == "shop" for r in seen)


def test_deduper_is_bounded():
    d = Deduper(capacity=2)
    assert d.first("a") and d.first("b") and d.first("c")
    assert len(d.seen) == 2
    assert d.first("a"), "the oldest id was forgotten"
    assert not d.first("c") and d.duplicates == 1
