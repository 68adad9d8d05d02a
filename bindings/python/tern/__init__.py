"""Tern for Python: track events through the Tern SDK (Rust, via uniffi).

    from tern import Tracker
    tracker = Tracker("/tmp/app.db", "https://collector.example.com", "WRITE_KEY")
    tracker.track("checkout", {"total": 59.9, "items": [{"sku": "a-1"}]})
    tracker.flush_and_wait(10.0)

Scripts and QA use it to drive the real SDK; the generated module (`make bindings`) lives in
`tern/_generated/` next to the shared library.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from ._generated import tern_bindings as _ffi

ApiError = _ffi.ApiError
PendingStats = _ffi.PendingStats

__all__ = ["Tracker", "ApiError", "PendingStats"]


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
            )
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
        self._inner.shutdown()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
