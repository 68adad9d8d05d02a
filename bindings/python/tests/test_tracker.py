"""The Python package against the real collector and kinesalite: events tracked from Python
go through urllib (UrllibHttpClient) and are read back from the stream, none missing."""

import http.server
import queue
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bindings/python"))
sys.path.insert(0, str(ROOT / "tools/consumer"))

from tern import ApiError, HttpClient, Tracker, UrllibHttpClient  # noqa: E402
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


def test_shutdown_releases_the_buffer_at_once(tmp_path):
    db = str(tmp_path / "reopen.db")
    first = Tracker(db, "http://127.0.0.1:9", KEY)
    first.track("before_shutdown", {})
    assert first.flush(5.0)
    install = first.install_id
    first.shutdown()
    # The Python object still lives; its buffer does not: a new tracker opens the same file.
    with pytest.raises(ApiError.Closed):
        first.track("after_shutdown", {})
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
        ids = {tracker.track("python_retry", {"i": i}) for i in range(20)}
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
    assert {r["event_id"] for r in seen} == ids, "every event is in the stream"


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
