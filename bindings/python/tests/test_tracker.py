"""The Python package against the real collector and kinesalite: events tracked from Python
are read back from the stream, none missing."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bindings/python"))
sys.path.insert(0, str(ROOT / "tools/consumer"))

from tern import ApiError, Tracker  # noqa: E402
from tern_consumer import Deduper, consume, kinesis_client  # noqa: E402

KEY = "python-test-key"


def start(cmd, **kw):
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True, **kw)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), f"{cmd[0]} printed {line!r}"
    return proc, "http://" + line.removeprefix("listening on ")


@pytest.fixture()
def pipeline():
    kinesalite, endpoint = start(["node", "tools/kinesalite.js", "0"])
    stream = f"python-{uuid.uuid4().hex}"
    client = kinesis_client(endpoint)
    client.create_stream(StreamName=stream, ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", TERN_LOG="error")
    collector, url = start(
        [str(ROOT / "target/debug/tern-collector"), "--listen", "127.0.0.1:0", "--stream", stream,
         "--kinesis-endpoint", endpoint, "--write-key", KEY, "--app-id", "python-app"],
        env=env,
    )
    yield client, stream, url
    collector.kill()
    kinesalite.kill()
    collector.wait()
    kinesalite.wait()


def test_events_tracked_from_python_reach_the_stream(pipeline, tmp_path):
    client, stream, url = pipeline
    with Tracker(str(tmp_path / "py.db"), url, KEY, os_name="Linux", app_version="1.0") as tracker:
        tracker.identify("py-user")
        ids = set()
        for i in range(200):
            ids.add(tracker.track("python_event", {"i": i, "nested": {"list": [1, 2.5, None, True, "x"]}}))
        assert tracker.flush_and_wait(30.0)
        stats = tracker.pending_stats()
        assert stats.pending_events == 0 and stats.dropped_events == 0
        install = tracker.install_id

    seen = []
    consume(client, stream, seen.append, Deduper(), poll_interval=0.05)
    assert {r["event_id"] for r in seen} == ids, "every tracked event is in the stream"
    record = seen[0]
    assert record["install_id"] == install
    assert record["user_id"] == "py-user"
    assert record["context"]["os"]["name"] == "Linux"
    assert record["properties"]["nested"] == {"list": [1, 2.5, None, True, "x"]}
    assert sorted(r["seq"] for r in seen) == list(range(1, 201))


def test_bad_input_raises_and_never_crashes(tmp_path):
    with Tracker(str(tmp_path / "bad.db"), "http://127.0.0.1:9", KEY) as tracker:
        with pytest.raises(ApiError.InvalidInput):
            tracker.track("has spaces", {})
        with pytest.raises(ApiError.InvalidInput):
            tracker._inner.track("ok", "[1, 2]")
        with pytest.raises(ApiError.InvalidInput):
            tracker._inner.track("ok", "{not json")
        # A second tracker on the same file is refused cleanly.
        with pytest.raises(ApiError.Unavailable):
            Tracker(str(tmp_path / "bad.db"), "http://127.0.0.1:9", KEY)
        tracker.set_opt_out(True)
        assert tracker.track("ignored", {}) is None
        assert tracker.pending_stats().opted_out
