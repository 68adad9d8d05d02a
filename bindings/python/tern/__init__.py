"""Tern for Python: track events through the Tern SDK (Rust, via uniffi).

    from tern import Tracker
    tracker = Tracker("/tmp/app.db", "https://collector.example.com", "WRITE_KEY")
    tracker.track("checkout", {"total": 59.9, "items": [{"sku": "a-1"}]})
    tracker.flush_and_wait(10.0)

Scripts and QA use it to drive the real SDK; the generated module (`make bindings`) lives in
`tern/_generated/` next to the shared library. Uploads go through urllib (`UrllibHttpClient`);
pass `http_client=` to use another `HttpClient`.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any, Mapping, Optional

from ._generated import tern_bindings as _ffi

ApiError = _ffi.ApiError
PendingStats = _ffi.PendingStats
HttpClient = _ffi.HttpClient
HttpRequest = _ffi.HttpRequest
HttpResponse = _ffi.HttpResponse
TransportError = _ffi.TransportError

__all__ = [
    "Tracker",
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


class Tracker:
    """One SDK tracker on its own SQLite buffer. Safe to use from any thread."""

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
        self._inner = _ffi.Tracker(
            _ffi.TrackerConfig(
                db_path=str(db_path),
                endpoint=endpoint,
                write_key=write_key,
                realtime=realtime,
                app_id=app_id,
                app_version=app_version,
                app_build=app_build,
                os_name=os_name,
                os_version=os_version,
                device_manufacturer=device_manufacturer,
                device_model=device_model,
                locale=locale,
                timezone=timezone,
            ),
            http_client if http_client is not None else UrllibHttpClient(),
        )

    @property
    def install_id(self) -> str:
        return self._inner.install_id()

    def track(self, name: str, properties: Optional[Mapping[str, Any]] = None) -> Optional[str]:
        """Tracks an event; returns its event_id (None after opt-out). Raises ApiError."""
        return self._inner.track(name, json.dumps(dict(properties or {}), default=str))

    def identify(self, user_id: Optional[str]) -> None:
        self._inner.identify(user_id)

    def set_super_properties(self, properties: Mapping[str, Any]) -> None:
        self._inner.set_super_properties(json.dumps(dict(properties), default=str))

    def reset(self) -> None:
        self._inner.reset()

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self._inner.flush(int(timeout_s * 1000))

    def flush_and_wait(self, timeout_s: float = 30.0) -> bool:
        return self._inner.flush_and_wait(int(timeout_s * 1000))

    def on_background(self) -> None:
        self._inner.on_background()

    def on_foreground(self) -> None:
        self._inner.on_foreground()

    def set_opt_out(self, opted_out: bool) -> None:
        self._inner.set_opt_out(opted_out)

    def pending_stats(self) -> PendingStats:
        return self._inner.pending_stats()

    def shutdown(self) -> None:
        """Stops the SDK's threads and closes the buffer, whose file can be opened again at once;
        buffered events stay for the next start. Later calls raise ApiError.Closed."""
        self._inner.shutdown()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
