"""The Python package against the real collector and kinesalite: events tracked from Python
go through urllib (UrllibHttpClient) and are read back from the stream, none missing."""

import http.server
import logging
import queue
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bindings/python"))
sys.path.insert(0, str(ROOT / "tools/consumer"))

from tern import (  # noqa: E402
    ApiError,
    Config,
    HttpClient,
    Tracker,
    TrackErrorReason,
    UrllibHttpClient,
)
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
        for i in range(200):
            tracker.track("python_event", {"i": i, "nested": {"list": [1, 2.5, None, True, "x"]}})
        assert tracker.flush_and_wait(30.0)
        stats = tracker.pending_stats()
        assert stats.pending_events == 0 and stats.dropped_events == 0
        install = tracker.install_id

    seen = []
    consume(client, stream, seen.append, Deduper(), poll_interval=0.05)
    assert {r["properties"]["i"] for r in seen} == set(range(200)), "every tracked event is in the stream"
    assert len({r["event_id"] for r in seen}) == 200
    record = seen[0]
    assert record["install_id"] == install
    assert record["user_id"] == "py-user"
    assert record["context"]["os"]["name"] == "Linux"
    assert record["properties"]["nested"] == {"list": [1, 2.5, None, True, "x"]}
    assert sorted(r["seq"] for r in seen) == list(range(1, 201))


def test_bad_input_never_raises_and_never_crashes(tmp_path):
    with Tracker(str(tmp_path / "bad.db"), "http://127.0.0.1:9", KEY) as tracker:
        assert tracker.track("has spaces", {}) is None
        assert tracker.track("ok", {"nan": float("nan")}) is None  # JSON has no NaN
        assert tracker.track("ok", {"bytes_key": {b"k": 1}}) is None  # not encodable
        assert tracker.track(123, {}) is None  # not even a string
        tracker.flush()  # the SDK's own checks run when the queue is handed over
        assert tracker.error_counts()[TrackErrorReason.INVALID_EVENT] == 4
        # The FFI below still refuses what is not a JSON object.
        with pytest.raises(ApiError.InvalidInput):
            tracker._inner.track("ok", "[1, 2]")
        # Only the constructor raises: a second tracker on the same file is refused cleanly.
        with pytest.raises(ApiError.Unavailable):
            Tracker(str(tmp_path / "bad.db"), "http://127.0.0.1:9", KEY)
        tracker.set_opt_out(True)
        tracker.track("ignored", {})
        assert tracker.flush()
        assert tracker.pending_stats().opted_out
        assert tracker.pending_stats().pending_events == 0


def _builder(tmp_path, name="listener.db"):
    return Config.builder(str(tmp_path / name), "http://127.0.0.1:9", KEY)


def test_an_invalid_event_returns_normally_and_the_listener_hears_why(tmp_path, caplog):
    heard = []
    config = _builder(tmp_path).error_listener(heard.append).build()
    with caplog.at_level(logging.WARNING, logger="tern"):
        with Tracker.from_config(config) as tracker:
            tracker.track("has spaces", {"i": 1})
            tracker.track("1starts_with_a_digit")
            tracker.track("ok", {"big": "x" * (70 * 1024)})
            tracker.flush()
            assert [e.reason for e in heard] == [TrackErrorReason.INVALID_EVENT] * 3
            assert [e.event_name for e in heard] == ["has spaces", "1starts_with_a_digit", "ok"]
            assert "event name" in heard[0].message
            assert "properties" in heard[2].message
            assert isinstance(heard[0].exception, ApiError.InvalidInput)
            assert tracker.error_counts()[TrackErrorReason.INVALID_EVENT] == 3
            tern_logs = [r for r in caplog.records if r.name == "tern"]
            assert len(tern_logs) == 1, "logged once per reason, not per call"
            assert "x" * 100 not in tern_logs[0].getMessage(), "the log carries no payload"
            # The tracker goes on taking valid events.
            tracker.track("valid_event")
            assert tracker.flush()
            assert len(heard) == 3
            assert tracker.pending_stats().pending_events == 1
            tracker.shutdown()
            # After shutdown: no exception either, the listener hears why.
            assert tracker.track("after_shutdown") is None
            assert heard[-1].reason is TrackErrorReason.CLOSED
            assert tracker.flush() is False
            tracker.set_super_properties({"a": 1})
            tracker.set_opt_out(True)
            assert tracker.error_counts()[TrackErrorReason.CLOSED] == 4
            tern_logs = [r for r in caplog.records if r.name == "tern"]
            assert len(tern_logs) == 2, "one line for invalid_event, one for closed"


def test_strict_raises_after_telling_the_listener(tmp_path):
    heard = []
    config = _builder(tmp_path, "strict.db").strict().error_listener(heard.append).build()
    with Tracker.from_config(config) as tracker:
        with pytest.raises(ApiError.InvalidInput):
            tracker.track("has spaces")
        with pytest.raises(ValueError):
            tracker.track("ok", {"nan": float("nan")})
        assert [e.reason for e in heard] == [TrackErrorReason.INVALID_EVENT] * 2
        tracker.track("valid_event")
        assert len(heard) == 2, "a valid event is taken"
        assert tracker.flush()
        assert tracker.pending_stats().pending_events == 1


def test_a_listener_that_raises_does_not_break_track(tmp_path, caplog):
    calls = []

    def buggy_listener(error):
        calls.append(error)
        raise RuntimeError("a bug in the app's listener")

    with caplog.at_level(logging.WARNING, logger="tern"):
        with Tracker(str(tmp_path / "raising-listener.db"), "http://127.0.0.1:9", KEY) as tracker:
            tracker.set_error_listener(buggy_listener)
            tracker.track("has spaces")
            tracker.track("has spaces")
            tracker.flush()
            assert len(calls) == 2, "the listener was called each time"
            assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
            tracker.track("valid_event")
            # Removing the listener: errors are still counted.
            tracker.set_error_listener(None)
            tracker.track("has spaces")
            tracker.flush()
            assert len(calls) == 2
            assert tracker.error_counts()[TrackErrorReason.INVALID_EVENT] == 3


def test_the_builders_settings_reach_the_sdk(tmp_path):
    config = _builder(tmp_path, "builder.db").max_buffer_events(5).flush_interval(3600).build()
    assert config.policy.max_buffer_events == 5
    assert config.policy.flush_interval_ms == 3_600_000
    assert config.policy.flush_at_count == 100, "untouched settings keep the SDK's defaults"
    with Tracker.from_config(config) as tracker:
        for i in range(8):
            tracker.track("capped", {"i": i})
        assert tracker.flush(5.0)
        # The cap of 5 applied: the 3 oldest were dropped (and counted).
        stats = tracker.pending_stats()
        assert stats.pending_events == 5
        assert stats.dropped_events == 3
    realtime = _builder(tmp_path, "unused.db").realtime().build().policy
    assert (realtime.flush_at_count, realtime.flush_interval_ms) == (1, 500)


def test_an_out_of_range_setting_is_refused_at_build(tmp_path):
    with pytest.raises(ValueError, match="max_batch_events"):
        _builder(tmp_path).max_batch_events(501).build()
    with pytest.raises(ValueError, match="flush_at_count"):
        _builder(tmp_path).flush_at_count(0).build()
    with pytest.raises(ValueError, match="max_buffer_events"):
        _builder(tmp_path).max_buffer_events(-1)
    with pytest.raises(ValueError, match="retry_min_delay"):
        _builder(tmp_path).retry_min_delay(600).retry_max_delay(60).build()
    _builder(tmp_path).max_batch_events(500).build()


def test_shutdown_releases_the_buffer_at_once(tmp_path):
    db = str(tmp_path / "reopen.db")
    first = Tracker(db, "http://127.0.0.1:9", KEY)
    first.track("before_shutdown", {})
    assert first.flush(5.0)
    install = first.install_id
    first.shutdown()
    # The Python object still lives; its buffer does not: a new tracker opens the same file.
    assert first.track("after_shutdown", {}) is None
    assert first.error_counts()[TrackErrorReason.CLOSED] == 1
    assert first.pending_stats().pending_events == 1
    assert first.install_id == install
    with Tracker(db, "http://127.0.0.1:9", KEY) as second:
        assert second.install_id == install
        assert second.pending_stats().pending_events == 1


class _BuggyUntilFixed(HttpClient):
    """An app's client with a bug (it raises what the HttpClient contract does not allow) until
    `fixed` is set; then it is the default client."""

    def __init__(self):
        self.inner = UrllibHttpClient()
        self.fixed = False
        self.failed_calls = 0

    def post(self, request):
        if not self.fixed:
            self.failed_calls += 1
            raise ValueError("a bug in the app's HTTP client")
        return self.inner.post(request)


def test_a_client_that_raises_crashes_nothing_and_loses_nothing(pipeline, tmp_path, capfd):
    client, stream, url = pipeline
    buggy = _BuggyUntilFixed()
    with Tracker(str(tmp_path / "raising.db"), url, KEY, realtime=True, http_client=buggy) as tracker:
        for i in range(20):
            tracker.track("python_retry", {"i": i})
        assert not tracker.flush_and_wait(1.5), "nothing can be delivered"
        assert buggy.failed_calls >= 1, "the client was called"
        assert tracker.pending_stats().pending_events == 20, "the batch is kept"
        # A failed attempt like a network error: no panic in the SDK's uploader thread (its
        # supervisor would hide one by restarting the thread; Rust's panic hook prints it).
        assert "panicked" not in capfd.readouterr().err
        # The kept batch is retried (after its backoff) and delivered.
        buggy.fixed = True
        assert tracker.flush_and_wait(30.0)
    seen = []
    consume(client, stream, seen.append, Deduper(), poll_interval=0.05)
    assert {r["properties"]["i"] for r in seen} == set(range(20)), "every event is in the stream"


def _eight_properties(i):
    return {"i": i, "screen": "checkout", "sku": f"sku-{i % 97}", "price": 19.99, "quantity": i % 5,
            "in_stock": i % 3 != 0, "currency": "EUR", "campaign": None}


def test_a_burst_that_fills_the_queue_loses_nothing_through_flush_or_shutdown(pipeline, tmp_path):
    client, stream, url = pipeline
    burst = 3000  # about 600 KB of calls: a 16 KiB hand-off queue fills over and over
    db = str(tmp_path / "burst.db")

    def config():
        # A full queue makes the calls wait, here long enough that a thread stalled by a busy
        # test machine cannot turn the wait into a drop (the drop path has its own test).
        return (Config.builder(db, url, KEY).max_buffer_events(1_000_000)
                ._handoff_queue_bytes(16 * 1024)._handoff_max_block(30.0).build())

    with Tracker.from_config(config()) as tracker:
        for i in range(burst):
            if i == burst // 2:
                tracker.identify("burst-user")
            tracker.track("burst", _eight_properties(i))
        assert tracker.flush_and_wait(120.0), "delivered after flush"
        for i in range(burst, 2 * burst):
            tracker.track("burst", _eight_properties(i))
        assert tracker._queue.full_waits > 0, "the queue filled"
        assert sum(tracker.error_counts().values()) == 0, "nothing dropped or refused"
        # No flush: shutdown() (leaving the with block) hands the queue over before it stops.
    with Tracker.from_config(config()) as tracker:
        assert tracker.flush_and_wait(120.0), "delivered after a restart"
    seen = []
    consume(client, stream, seen.append, Deduper(), poll_interval=0.05)
    assert {r["properties"]["i"] for r in seen} == set(range(2 * burst)), "every event is in the stream"
    for r in seen:
        expected = "burst-user" if r["properties"]["i"] >= burst // 2 else None
        assert r.get("user_id") == expected, "each event has the user of its time"


def test_a_queue_that_stays_full_drops_and_counts_the_drop(tmp_path):
    heard = []
    config = _builder(tmp_path, "full.db").error_listener(heard.append)._handoff_queue_bytes(1024).build()
    with Tracker.from_config(config) as tracker:
        with tracker._drain_lock:  # nothing is handed over meanwhile
            for i in range(12):
                tracker.track("crowded", _eight_properties(i))
        dropped = sum(1 for e in heard if e.reason is TrackErrorReason.DROPPED)
        assert 1 <= dropped <= 11, "some fit, the rest waited 100 ms each and were dropped"
        assert tracker.flush()
        stats = tracker.pending_stats()
        assert stats.pending_events == 12 - dropped
        assert stats.dropped_events == dropped, "the SDK counts the drops (a queue_full gap)"


class _Observed(HttpClient):
    """The default client, with every answer it returns put on a queue."""

    def __init__(self):
        self.inner = UrllibHttpClient()
        self.answers = queue.Queue()

    def post(self, request):
        answer = self.inner.post(request)
        self.answers.put(answer)
        return answer


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_not_followed_and_the_batch_is_kept(tmp_path, status):
    posts, followed = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/batch":
                posts.append(self.path)
                self.send_response(status)
                self.send_header("Location", elsewhere)
            else:  # following the redirect would land here; its 200 must never count
                followed.append(self.path)
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST  # a 302 followed by urllib's default handler becomes a GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    elsewhere = f"{url}/elsewhere"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        observed = _Observed()
        with Tracker(str(tmp_path / "redirect.db"), url, KEY, realtime=True, http_client=observed) as tracker:
            for i in range(5):
                tracker.track("python_redirect", {"i": i})
            answer = observed.answers.get(timeout=10)
            assert answer.status == status, "the redirect is the answer"
            assert answer.location == elsewhere
            assert not tracker.flush_and_wait(1.0), "nothing can be delivered"
            assert posts
            assert not followed, "the redirect was not followed"
            assert tracker.pending_stats().pending_events == 5, "the batch is kept"
    finally:
        server.shutdown()
        server.server_close()
