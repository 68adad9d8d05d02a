"""Tern for Python: track events through the Tern SDK (Rust, via uniffi).

    from tern import Config, Tracker
    tracker = Tracker("/tmp/app.db", "https://collector.example.com", "WRITE_KEY")
    tracker.track("checkout", {"total": 59.9, "items": [{"sku": "a-1"}]})
    tracker.flush_and_wait(10.0)

    # Or with settings: Config.builder(...).flush_at_count(20).error_listener(print).build()
    tracker = Tracker.from_config(config)

`track()` never raises (unless the config is `strict()`): what it does not take is counted,
logged once per reason and passed to the error listener.

Scripts and QA use it to drive the real SDK; the generated module (`make bindings`) lives in
`tern/_generated/` next to the shared library. Uploads go through urllib (`UrllibHttpClient`);
pass `http_client=` to use another `HttpClient`.
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import json
import logging
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Mapping, Optional

from ._generated import tern_bindings as _ffi

ApiError = _ffi.ApiError
PendingStats = _ffi.PendingStats
HttpClient = _ffi.HttpClient
HttpRequest = _ffi.HttpRequest
HttpResponse = _ffi.HttpResponse
TransportError = _ffi.TransportError
UploadPolicy = _ffi.UploadPolicy

__all__ = [
    "Tracker",
    "Config",
    "ConfigBuilder",
    "TrackError",
    "TrackErrorReason",
    "ErrorListener",
    "UploadPolicy",
    "ApiError",
    "PendingStats",
    "HttpClient",
    "HttpRequest",
    "HttpResponse",
    "TransportError",
    "UrllibHttpClient",
]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hands every 3xx back as an HTTPError instead of following it: a followed 302 turns the
    POST into a GET, whose 200 from elsewhere must not count as delivered."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None


class UrllibHttpClient(HttpClient):
    """The default HttpClient: urllib, with the environment's proxies and the system's CA
    certificates, never following a redirect. The SDK calls it on its uploader thread.

    Every HTTP answer is returned (urllib raises 3xx, 4xx and 5xx as HTTPError, which carries
    the status, headers and body); only a failure without an answer (DNS, connection, TLS,
    timeout) raises TransportError.Network. The timeout applies to connecting and to each read.
    """

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirects)

    def post(self, request: HttpRequest) -> HttpResponse:
        req = urllib.request.Request(
            request.url, data=request.body, headers=dict(request.headers), method="POST"
        )
        try:
            with self._opener.open(req, timeout=request.timeout_ms / 1000) as answer:
                return self._response(answer.status, answer.headers, answer, request)
        except urllib.error.HTTPError as answer:  # an answer, whatever its status
            with answer:
                return self._response(answer.code, answer.headers, answer, request)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise TransportError.Network(f"{type(e).__name__}: {e}") from e

    @staticmethod
    def _response(status, headers, body, request: HttpRequest) -> HttpResponse:  # noqa: ANN001
        try:
            data = body.read(request.max_response_bytes)
        except (http.client.HTTPException, OSError):
            data = b""  # the status decides; a cut acknowledgement is no acknowledgement
        return HttpResponse(
            status=status,
            retry_after=headers.get("Retry-After") if headers else None,
            location=headers.get("Location") if headers else None,
            body=data,
        )


class TrackErrorReason(str, enum.Enum):
    """Why a call did not take what it was given. Each reason is logged once per tracker (the
    first time), then only counted (`Tracker.error_counts()`)."""

    INVALID_EVENT = "invalid_event"
    """A bad event name, properties over the limits (64 KiB, 16 levels) or not JSON-encodable."""
    DROPPED = "dropped"
    """Dropped on a full hand-off queue or a failing disk (also counted by the SDK and reported
    to the collector)."""
    CLOSED = "closed"
    """The call came after `shutdown()`."""
    INTERNAL = "internal"
    """Anything else: an unexpected failure inside the SDK, worth reporting as a bug."""


@dataclasses.dataclass(frozen=True)
class TrackError:
    """What an error listener receives."""

    reason: TrackErrorReason
    """Why, as one of a few reasons."""
    call: str
    """The call that failed: `track`, `set_super_properties`, `set_opt_out`, `flush`, ..."""
    event_name: Optional[str]
    """The event's name, for `track`."""
    message: str
    """The SDK's explanation (never the event's properties)."""
    exception: BaseException
    """What the SDK raised."""

    def __str__(self) -> str:
        name = f" {self.event_name}" if self.event_name is not None else ""
        return f"TrackError({self.reason.value}, {self.call}{name}: {self.message})"


ErrorListener = Callable[[TrackError], None]
"""Hears about every refused call, on the calling thread; what it raises is caught."""


def _millis(setting: str, seconds: float) -> int:
    if seconds < 0:
        raise ValueError(f"{setting} must not be negative, not {seconds}")
    return int(round(seconds * 1000))


def _count(setting: str, n: int) -> int:
    if n < 0:
        raise ValueError(f"{setting} must not be negative, not {n}")
    return int(n)


class Config:
    """Everything a Tracker starts with; build one with `Config.builder(...)`:

        config = (Config.builder("/tmp/app.db", "https://collector.example.com", "WRITE_KEY")
                  .flush_interval(5.0).flush_at_count(20).max_buffer_events(50_000)
                  .error_listener(lambda error: log.warning("%s", error))
                  .build())
        tracker = Tracker.from_config(config)
    """

    def __init__(self, fields: dict) -> None:
        self._fields = dict(fields)

    @property
    def policy(self) -> UploadPolicy:
        """When to upload and what the buffer keeps (a copy)."""
        return _copy_policy(self._fields["policy"])

    @property
    def strict(self) -> bool:
        """Whether the calls raise instead of only reporting to the listener."""
        return self._fields["strict"]

    @staticmethod
    def builder(db_path: str, endpoint: str, write_key: str) -> "ConfigBuilder":
        """A builder with every setting at the SDK's default (sdk/src/policy.rs)."""
        return ConfigBuilder(db_path, endpoint, write_key)


def _copy_policy(p: UploadPolicy) -> UploadPolicy:
    return UploadPolicy(**{name: getattr(p, name) for name in _POLICY_FIELDS})


_POLICY_FIELDS = (
    "flush_interval_ms",
    "flush_at_count",
    "max_batch_events",
    "max_batch_bytes",
    "max_batch_compressed_bytes",
    "max_buffer_events",
    "max_buffer_bytes",
    "max_event_age_ms",
    "max_quarantine_batches",
    "max_quarantine_bytes",
    "retry_min_delay_ms",
    "retry_max_delay_ms",
    "max_connectivity_retry_delay_ms",
    "session_timeout_ms",
)


class ConfigBuilder:
    """Builds a `Config`. Every setting starts at the SDK's default; `build()` raises ValueError
    naming the first setting out of the SDK's limits. Durations are in seconds."""

    def __init__(self, db_path: str, endpoint: str, write_key: str) -> None:
        self._policy = _ffi.default_upload_policy()
        self._fields: dict = {
            "db_path": str(db_path),
            "endpoint": endpoint,
            "write_key": write_key,
            "strict": False,
            "error_listener": None,
            "http_client": None,
            "context": {},
        }

    def _set(self, **policy: int) -> "ConfigBuilder":
        for name, value in policy.items():
            setattr(self._policy, name, value)
        return self

    def realtime(self) -> "ConfigBuilder":
        """The realtime preset: upload at every event and every 500 ms (events readable in under
        2 s). Later `flush_interval` and `flush_at_count` calls override it."""
        preset = _ffi.realtime_upload_policy()
        return self._set(
            flush_interval_ms=preset.flush_interval_ms, flush_at_count=preset.flush_at_count
        )

    def flush_interval(self, seconds: float) -> "ConfigBuilder":
        """Upload what waits at least this often (default 10 s)."""
        return self._set(flush_interval_ms=_millis("flush_interval", seconds))

    def flush_at_count(self, count: int) -> "ConfigBuilder":
        """Upload as soon as this many events wait (default 100)."""
        return self._set(flush_at_count=_count("flush_at_count", count))

    def max_batch_events(self, count: int) -> "ConfigBuilder":
        """Most events in one batch (default 250, at most 500)."""
        return self._set(max_batch_events=_count("max_batch_events", count))

    def max_batch_bytes(self, n: int) -> "ConfigBuilder":
        """Most uncompressed bytes of events in one batch (default 512 KiB, at most 5 MiB)."""
        return self._set(max_batch_bytes=_count("max_batch_bytes", n))

    def max_batch_compressed_bytes(self, n: int) -> "ConfigBuilder":
        """Most compressed bytes of one upload (default 512 KiB, at most 1 MiB)."""
        return self._set(max_batch_compressed_bytes=_count("max_batch_compressed_bytes", n))

    def max_buffer_events(self, count: int) -> "ConfigBuilder":
        """Most events the buffer keeps; the oldest beyond are dropped and reported (default
        100 000)."""
        return self._set(max_buffer_events=_count("max_buffer_events", count))

    def max_buffer_bytes(self, n: int) -> "ConfigBuilder":
        """Most bytes of event JSON the buffer keeps (default 32 MiB)."""
        return self._set(max_buffer_bytes=_count("max_buffer_bytes", n))

    def max_event_age(self, seconds: float) -> "ConfigBuilder":
        """Oldest event the buffer keeps (default 30 days)."""
        return self._set(max_event_age_ms=_millis("max_event_age", seconds))

    def max_quarantine_batches(self, count: int) -> "ConfigBuilder":
        """Most refused batches kept in quarantine (default 50; 0 keeps none)."""
        return self._set(max_quarantine_batches=_count("max_quarantine_batches", count))

    def max_quarantine_bytes(self, n: int) -> "ConfigBuilder":
        """Most bytes of event JSON kept in quarantine (default 4 MiB; 0 keeps none)."""
        return self._set(max_quarantine_bytes=_count("max_quarantine_bytes", n))

    def retry_min_delay(self, seconds: float) -> "ConfigBuilder":
        """First retry delay after a failed upload, before jitter (default 1 s)."""
        return self._set(retry_min_delay_ms=_millis("retry_min_delay", seconds))

    def retry_max_delay(self, seconds: float) -> "ConfigBuilder":
        """Longest retry delay (default 5 minutes)."""
        return self._set(retry_max_delay_ms=_millis("retry_max_delay", seconds))

    def max_connectivity_retry_delay(self, seconds: float) -> "ConfigBuilder":
        """Longest retry delay after attempts that got no answer (offline; default 60 s)."""
        return self._set(
            max_connectivity_retry_delay_ms=_millis("max_connectivity_retry_delay", seconds)
        )

    def session_timeout(self, seconds: float) -> "ConfigBuilder":
        """A session ends after this long without an event (default 30 minutes)."""
        return self._set(session_timeout_ms=_millis("session_timeout", seconds))

    def strict(self, strict: bool = True) -> "ConfigBuilder":
        """Raise from `track()` and the other calls instead of only reporting (for tests and
        debug builds). The listener still hears every error first."""
        self._fields["strict"] = strict
        return self

    def error_listener(self, listener: Optional[ErrorListener]) -> "ConfigBuilder":
        """Hears about every refused call; also settable later (`Tracker.set_error_listener`)."""
        self._fields["error_listener"] = listener
        return self

    def _handoff_queue_bytes(self, n: int) -> "ConfigBuilder":
        """A smaller hand-off queue, for tests that fill it."""
        self._fields["handoff_queue_bytes"] = n
        return self

    def _handoff_max_block(self, seconds: float) -> "ConfigBuilder":
        """A longer wait for room, for tests whose machine may stall a thread for longer."""
        self._fields["handoff_max_block_s"] = seconds
        return self

    def http_client(self, client: HttpClient) -> "ConfigBuilder":
        """Performs the uploads' HTTP requests (`UrllibHttpClient` by default)."""
        self._fields["http_client"] = client
        return self

    def context(self, **fields: Optional[str]) -> "ConfigBuilder":
        """Context of the batches: app_id, app_version, app_build, os_name, os_version,
        device_manufacturer, device_model, locale, timezone."""
        unknown = set(fields) - set(_CONTEXT_FIELDS)
        if unknown:
            raise ValueError(f"unknown context fields: {sorted(unknown)}")
        self._fields["context"].update(fields)
        return self

    def build(self) -> Config:
        """The config; raises ValueError naming the first setting out of range."""
        try:
            _ffi.check_upload_policy(self._policy)
        except ApiError.InvalidInput as e:
            raise ValueError(str(e.reason)) from None
        fields = dict(self._fields, policy=_copy_policy(self._policy))
        fields["context"] = dict(self._fields["context"])
        return Config(fields)


_CONTEXT_FIELDS = (
    "app_id",
    "app_version",
    "app_build",
    "os_name",
    "os_version",
    "device_manufacturer",
    "device_model",
    "locale",
    "timezone",
)

_log = logging.getLogger("tern")


class Tracker:
    """One SDK tracker on its own SQLite buffer. Safe to use from any thread.

    `track()` and the calls that set state (`identify()`, `set_super_properties()`, `reset()`,
    `set_opt_out()`) read the clocks, encode the call, append it to an in-process queue and
    return, without calling into the native library; the tracker's hand-off thread passes
    everything queued to the SDK in one call, in order (see `bindings/src/handoff.rs`). The
    queue is bounded in bytes: when the SDK cannot keep up, a call waits at most 100 ms for room,
    then the event is dropped, counted and reported to the collector as a `queue_full` gap.
    `flush()`, `flush_and_wait()`, `on_background()` and `shutdown()` hand the queue over first.

    `track()` never raises, and neither do the other calls: an event the SDK does not take (a
    bad name, properties over the limits or not JSON-encodable, dropped on a full queue or a
    failing disk, a call after `shutdown()`) is counted (`error_counts()`), logged once per
    reason (logger `tern`), and passed to the error listener if one is set (on the calling
    thread for what is refused at the call, on the hand-off thread or the flushing thread for
    what the SDK's checks refuse). With a strict config each call is handed over at once and
    raises `ApiError` (or the encoder's error) instead. Only the constructor raises: `ApiError`
    when the buffer cannot be opened, ValueError for a setting out of range.
    """

    def __init__(
        self,
        db_path: str,
        endpoint: str,
        write_key: str,
        *,
        realtime: bool = False,
        app_id: Optional[str] = None,
        app_version: Optional[str] = None,
        app_build: Optional[str] = None,
        os_name: Optional[str] = None,
        os_version: Optional[str] = None,
        device_manufacturer: Optional[str] = None,
        device_model: Optional[str] = None,
        locale: Optional[str] = None,
        timezone: Optional[str] = None,
        http_client: Optional[HttpClient] = None,
    ) -> None:
        """The tracker with the default policy, or the realtime preset; for other settings,
        `Tracker.from_config(Config.builder(...)...build())`."""
        builder = Config.builder(db_path, endpoint, write_key).context(
            app_id=app_id,
            app_version=app_version,
            app_build=app_build,
            os_name=os_name,
            os_version=os_version,
            device_manufacturer=device_manufacturer,
            device_model=device_model,
            locale=locale,
            timezone=timezone,
        )
        if realtime:
            builder.realtime()
        if http_client is not None:
            builder.http_client(http_client)
        config = builder.build()
        self._start(config)

    def _start(self, config: Config) -> None:
        f = config._fields
        self._strict: bool = f["strict"]
        # Read only when a call failed: a tracker without a listener pays nothing on success.
        self._error_listener: Optional[ErrorListener] = f["error_listener"]
        self._error_counts = {reason: 0 for reason in TrackErrorReason}
        self._listener_failures = 0
        self._counts_lock = threading.Lock()
        context = {name: f["context"].get(name) for name in _CONTEXT_FIELDS}
        self._inner = _ffi.Tracker(
            _ffi.TrackerConfig(
                db_path=f["db_path"],
                endpoint=f["endpoint"],
                write_key=f["write_key"],
                policy=_copy_policy(f["policy"]),
                **context,
            ),
            f["http_client"] if f["http_client"] is not None else UrllibHttpClient(),
        )
        limits = _ffi.handoff_limits()
        self._queue = _HandoffQueue(
            f.get("handoff_queue_bytes") or limits.max_queue_bytes,
            f.get("handoff_max_block_s") or limits.max_track_block_ms / 1000,
        )
        # Held while handing the queue over, so that calls reach the SDK in their order.
        self._drain_lock = threading.RLock()  # reentrant: a listener may call shutdown()
        self._stopping = False
        self._drainer = threading.Thread(target=self._drain_loop, name="tern-handoff", daemon=True)
        self._drainer.start()

    @classmethod
    def from_config(cls, config: Config) -> "Tracker":
        """The tracker a `Config` describes."""
        tracker = cls.__new__(cls)
        tracker._start(config)
        return tracker

    @property
    def install_id(self) -> str:
        return self._inner.install_id()

    def set_error_listener(self, listener: Optional[ErrorListener]) -> None:
        """Sets (or, with None, removes) the callable that hears about every refused call. It
        runs on the calling thread; what it raises is caught."""
        self._error_listener = listener

    def error_counts(self) -> Dict[TrackErrorReason, int]:
        """How many calls were refused since the tracker started, by reason."""
        with self._counts_lock:
            return dict(self._error_counts)

    def track(self, name: str, properties: Optional[Mapping[str, Any]] = None) -> None:
        """Tracks an event: queues it and returns (see the class documentation; the event appears
        in the stream under an event_id the SDK gives it). Never raises unless the config is
        strict."""
        # The hot path of the binding: module-level names, the common case (a dict, the C JSON
        # encoder, not strict) without a further Python call.
        wall_ms = _time_ns() // 1_000_000
        mono_ns = _monotonic_ns()
        try:
            if type(name) is not str:
                raise TypeError(f"the event name must be a string, not {type(name).__name__}")
            name_bytes = name.encode()
            if type(properties) is dict and _C_ENCODER is not None:
                body = "".join(_C_ENCODER(properties, 0)).encode()
            else:
                body = _encode(properties or {}).encode()
            call = b"".join(
                (_TRACK_PACK(_TRACK_CALL, wall_ms, mono_ns, len(name_bytes)), name_bytes, _U32_PACK(len(body)), body)
            )
        except Exception as e:  # noqa: BLE001 - analytics never breaks the caller
            self._refused("track", name if isinstance(name, str) else None, e, None)
            return
        if self._strict:
            self._hand_over_now(call)
            return
        outcome = self._queue.offer(call, True)
        if outcome is not _QUEUED:
            self._refused_offer("track", name, outcome)

    def identify(self, user_id: Optional[str]) -> None:
        """Sets (or, with None, forgets) the user id of the following events."""
        if user_id is None:
            call = _IDENTIFY + b"\x00"
        else:
            try:
                call = _IDENTIFY + b"\x01" + _string(user_id)
            except Exception as e:  # noqa: BLE001
                self._refused("identify", None, e, None)
                return
        self._enqueue("identify", None, call, False)

    def set_super_properties(self, properties: Mapping[str, Any]) -> None:
        """Properties added to every following event; refused ones are reported like track()'s."""
        try:
            call = _SUPER_PROPERTIES + _string(_encode(properties))
        except Exception as e:  # noqa: BLE001
            self._refused("set_super_properties", None, e, None)
            return
        self._enqueue("set_super_properties", None, call, False)

    def reset(self) -> None:
        """Forgets the user and the super-properties; starts a new session."""
        self._enqueue("reset", None, _RESET, False)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Hands over what is queued and waits until it is durable, then uploads; False after
        shutdown()."""
        self._drain()
        try:
            return self._inner.flush(max(0, int(timeout_s * 1000)))
        except Exception as e:  # noqa: BLE001
            return self._refused("flush", None, e, False)

    def flush_and_wait(self, timeout_s: float = 30.0) -> bool:
        self._drain()
        try:
            return self._inner.flush_and_wait(max(0, int(timeout_s * 1000)))
        except Exception as e:  # noqa: BLE001
            return self._refused("flush_and_wait", None, e, False)

    def on_background(self) -> None:
        self._drain()
        try:
            self._inner.on_background()
        except Exception as e:  # noqa: BLE001
            self._refused("on_background", None, e, None)

    def on_foreground(self) -> None:
        try:
            self._inner.on_foreground()
        except Exception as e:  # noqa: BLE001
            self._refused("on_foreground", None, e, None)

    def network_available(self) -> None:
        """The network is back: upload now, skipping a backoff that came from connectivity
        failures (a server's backoff still holds). Does not block."""
        try:
            self._inner.network_available()
        except Exception as e:  # noqa: BLE001
            self._refused("network_available", None, e, None)

    def set_opt_out(self, opted_out: bool) -> None:
        """Stops collection and purges the buffer (True), or resumes (False); in order."""
        self._enqueue("set_opt_out", None, _OPT_OUT + (b"\x01" if opted_out else b"\x00"), False)

    def pending_stats(self) -> PendingStats:
        """What waits in the buffer (events still in the hand-off queue included)."""
        queued = self._queue.queued_events()
        stats = self._inner.pending_stats()
        stats.pending_events += queued
        return stats

    def shutdown(self) -> None:
        """Hands over what is queued, stops the SDK's threads and closes the buffer, whose file
        can be opened again at once; buffered events stay for the next start. Later calls are
        refused as `closed`."""
        self._queue.close()
        self._stopping = True
        self._queue.wake.set()
        if threading.current_thread() is not self._drainer:
            self._drainer.join(_CLOSE_JOIN_S)
        self._drain()
        try:
            self._inner.shutdown()
        except Exception as e:  # noqa: BLE001
            self._refused("shutdown", None, e, None)

    def _enqueue(self, call: str, event_name: Optional[str], encoded: bytes, is_event: bool) -> None:
        if self._strict:
            self._hand_over_now(encoded)
            return
        outcome = self._queue.offer(encoded, is_event)
        if outcome is not _QUEUED:
            self._refused_offer(call, event_name, outcome)

    def _refused_offer(self, call: str, event_name: Optional[str], outcome: str) -> None:
        if outcome is _FULL:
            self._refused(call, event_name, ApiError.Dropped(_QUEUE_FULL_MESSAGE), None)
        else:
            self._refused(call, event_name, ApiError.Closed(), None)

    def _hand_over_now(self, encoded: bytes) -> None:
        """Strict mode: what is queued, then this call, handed over on the caller's thread."""
        with self._drain_lock:
            self._drain_locked(may_raise=False)
            if self._queue.is_closed():
                refusals = [_ffi.Refusal(index=0, call="call", event_name=None, kind=_ffi.RefusalKind.CLOSED,
                                         reason="the tracker is shut down")]
            else:
                refusals = self._inner.track_many(encoded, time.monotonic_ns(), 0)
        for refusal in refusals:
            self._report(refusal, may_raise=True)

    def _drain_loop(self) -> None:
        wake = self._queue.wake
        while not self._stopping:
            wake.wait()  # set by the call that makes the queue non-empty, and by shutdown()
            wake.clear()
            self._drain()

    def _drain(self) -> None:
        """Hands what is queued to the SDK in one call and reports what it refused."""
        with self._drain_lock:
            self._drain_locked(may_raise=False)

    def _drain_locked(self, may_raise: bool) -> None:
        taken = self._queue.take()
        if taken is None:
            return
        calls, dropped = taken
        try:
            refusals = self._inner.track_many(calls, time.monotonic_ns(), dropped)
        except Exception as e:  # noqa: BLE001 - a panic in the SDK, caught at the boundary
            self._refused("track", None, e, None, may_raise)
            return
        for refusal in refusals:
            self._report(refusal, may_raise)

    def _report(self, refusal: "_ffi.Refusal", may_raise: bool) -> None:
        kind = refusal.kind
        if kind == _ffi.RefusalKind.INVALID_INPUT:
            error: Exception = ApiError.InvalidInput(refusal.reason)
        elif kind == _ffi.RefusalKind.DROPPED:
            error = ApiError.Dropped(refusal.reason)
        elif kind == _ffi.RefusalKind.CLOSED:
            error = ApiError.Closed()
        else:
            error = RuntimeError(refusal.reason)
        call = _CALL_NAMES.get(refusal.call, refusal.call)
        self._refused(call, refusal.event_name, error, None, may_raise)

    def _refused(
        self, call: str, event_name: Optional[str], e: Exception, fallback: Any, may_raise: bool = True
    ) -> Any:
        """Counts, logs (once per reason) and reports a refused call; raises only when strict and
        on the caller's thread (`may_raise`)."""
        if isinstance(e, ApiError.InvalidInput) or isinstance(e, (TypeError, ValueError, RecursionError)):
            # TypeError/ValueError/RecursionError: properties json cannot encode (NaN, bytes
            # keys, a cycle...).
            reason = TrackErrorReason.INVALID_EVENT
        elif isinstance(e, ApiError.Dropped):
            reason = TrackErrorReason.DROPPED
        elif isinstance(e, ApiError.Closed):
            reason = TrackErrorReason.CLOSED
        else:
            reason = TrackErrorReason.INTERNAL
        # The SDK's errors carry their explanation in `reason`; others in their str().
        message = str(getattr(e, "reason", None) or e) or type(e).__name__
        with self._counts_lock:
            self._error_counts[reason] += 1
            first = self._error_counts[reason] == 1
        if first:
            _log.warning(
                "Tern: %s refused (%s): %s; later %s errors are only counted",
                call,
                reason.value,
                message,
                reason.value,
            )
        listener = self._error_listener
        if listener is not None:
            try:
                listener(TrackError(reason, call, event_name, message, e))
            except Exception:  # noqa: BLE001 - the listener must not break the caller either
                with self._counts_lock:
                    self._listener_failures += 1
                    first_failure = self._listener_failures == 1
                if first_failure:
                    _log.warning("Tern: the error listener raised; its errors are caught", exc_info=True)
        if self._strict and may_raise:
            raise e
        return fallback

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# The calls of the hand-off buffer (bindings/src/handoff.rs).
_TRACK_CALL = 1
_IDENTIFY, _SUPER_PROPERTIES, _RESET, _OPT_OUT = b"\x02", b"\x03", b"\x04", b"\x05"
_TRACK = struct.Struct("<BqqI")  # the track call, wall clock ms, monotonic ns, name length
_U32 = struct.Struct("<I")
_TRACK_PACK = _TRACK.pack
_U32_PACK = _U32.pack
_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_QUEUED, _FULL, _CLOSED = "queued", "full", "closed"
_CLOSE_JOIN_S = 10.0  # how long shutdown() waits for a hand-over in progress
_QUEUE_FULL_MESSAGE = "the hand-off queue stayed full: the SDK cannot store events as fast as they are tracked"
# The SDK names the calls as Kotlin does; this layer's names.
_CALL_NAMES = {"setSuperProperties": "set_super_properties", "setOptOut": "set_opt_out"}


def _string(s: str) -> bytes:
    b = s.encode()
    return _U32.pack(len(b)) + b


class _HandoffQueue:
    """Encoded calls waiting for the hand-off thread, bounded by `max_bytes`: a full queue makes
    a call wait at most `max_block_s`, then an event is dropped (and counted, to be reported);
    other calls are queued anyway (an identify() or an opt-out is never dropped)."""

    def __init__(self, max_bytes: int, max_block_s: float) -> None:
        self._max_bytes = max_bytes
        self._max_block_s = max_block_s
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._calls: list = []
        self._size = 0
        self._events = 0
        self._dropped = 0
        self._closed = False
        self.full_waits = 0
        # Set when the queue stops being empty: wakes the hand-off thread.
        self.wake = threading.Event()

    def offer(self, call: bytes, is_event: bool) -> str:
        n = len(call)
        with self._lock:
            if self._closed:
                return _CLOSED
            size = self._size
            if size and size + n > self._max_bytes:
                self.full_waits += 1
                deadline = time.monotonic() + self._max_block_s
                while self._size and self._size + n > self._max_bytes and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.wake.set()
                    self._taken.wait(left)
                if self._closed:
                    return _CLOSED
                if self._size and self._size + n > self._max_bytes and is_event:
                    self._dropped += 1
                    return _FULL
                size = self._size
            self._calls.append(call)
            self._size = size + n
            if is_event:
                self._events += 1
        if not size:
            self.wake.set()
        return _QUEUED

    def take(self) -> Optional[tuple]:
        """Everything queued, as one buffer, and the drops to report with it; None when empty."""
        with self._lock:
            if not self._size and not self._dropped:
                return None
            calls, dropped = self._calls, self._dropped
            self._calls = []
            self._size = self._events = self._dropped = 0
            self._taken.notify_all()
        return b"".join(calls), dropped

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._taken.notify_all()

    def is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def queued_events(self) -> int:
        with self._lock:
            return self._events


# One encoder for every call: json.dumps() with options builds a new one each time, and
# JSONEncoder.encode() builds the C encoder each time. The C encoder (CPython's `_json`) is made
# once here, without the circular-reference check (whose bookkeeping an error can leave behind):
# properties that contain themselves hit the recursion limit instead, a RecursionError, refused
# as an invalid event like the other encoding errors.
_ENCODER = json.JSONEncoder(default=str, allow_nan=False, check_circular=False, separators=(",", ":"))
_C_ENCODER = (
    json.encoder.c_make_encoder(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    if json.encoder.c_make_encoder is not None
    else None
)


def _encode(properties: Mapping[str, Any]) -> str:
    """Properties as a JSON object; NaN and infinities are refused (JSON has none), other
    values json cannot encode become their str()."""
    obj = properties if type(properties) is dict else dict(properties)
    if _C_ENCODER is not None:
        return "".join(_C_ENCODER(obj, 0))
    return _ENCODER.encode(obj)
