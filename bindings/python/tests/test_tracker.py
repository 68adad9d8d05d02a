"""The Python package against the real collector and kinesalite: events tracked from Python
are read back from the stream, none missing."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bindings/python"))
sys.path.insert(0, str(ROOT / "tools/consumer"))

from tern import ApiError, Tracker  # noqa: E402
from local_pipeline import local_pipeline  # noqa: E402
from tern_consumer import Deduper, consume  # noqa: E402

KEY = "python-test-key"


@pytest.fixture()
def pipeline():
    with local_pipeline(KEY, "python-app") as p:
        yield p


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
