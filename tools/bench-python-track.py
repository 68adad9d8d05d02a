#!/usr/bin/env python3
"""The Python binding's per-call cost: `tern.Tracker.track` timed with perf_counter_ns.

Usage: python3 tools/bench-python-track.py [--calls 50000] [--warmup 5000]
       [--endpoint http://127.0.0.1:9] [--path queue|ffi] [--rounds 1]

`--path queue` (the default) times `Tracker.track`, which queues the call for the hand-off
thread; `--path ffi` times the path `track()` took before the hand-off queue, in the same
process: the properties encoded as `json.dumps(dict(p), default=str, allow_nan=False)` and one
FFI call per event (`_inner.track`), for a ratio measured in the same run. `--rounds N`
alternates the two paths N times.

Buffering only by default: the endpoint refuses connections (the discard port on 127.0.0.1), so
the SDK stores every event and its uploads fail and back off; what is timed is the binding's
encoding, the FFI call and the hand-off to the SDK's writer thread. Needs the generated module
and library in bindings/python/tern/_generated (`make bindings`, or tools/bench-kotlin.sh).
Prints a line for people and a JSON line.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings", "python"))

import tern  # noqa: E402

NAME = "product_added"
# The same 8 properties as the JVM comparison (bindings/kotlin/bench, Event.kt).
PROPERTIES = {
    "product_id": "sku-48213-blu-42",
    "name": "Trail Running Shoe",
    "category": "outdoor/footwear",
    "currency": "EUR",
    "price": 129.99,
    "quantity": 2,
    "position": 7,
    "in_stock": True,
}


def percentile(sorted_values, q):
    """Nearest rank."""
    return sorted_values[max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--endpoint", default="http://127.0.0.1:9")
    parser.add_argument("--path", choices=["queue", "ffi", "both"], default="queue")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    paths = ["queue", "ffi"] if args.path == "both" else [args.path]
    for _ in range(args.rounds):
        for path in paths:
            run(args, path)


def run(args, path):
    with tempfile.TemporaryDirectory(prefix="tern-py-bench-") as tmp:
        tracker = tern.Tracker(os.path.join(tmp, "bench.db"), args.endpoint, "bench")
        if path == "queue":
            track = tracker.track
        else:
            inner = tracker._inner

            def track(name, properties):
                try:
                    inner.track(name, json.dumps(dict(properties), default=str, allow_nan=False))
                except tern.ApiError:
                    pass  # counted by the SDK (dropped_events)
        for _ in range(args.warmup):
            track(NAME, PROPERTIES)
        times = [0] * args.calls
        clock = time.perf_counter_ns
        start = clock()
        for i in range(args.calls):
            t0 = clock()
            track(NAME, PROPERTIES)
            times[i] = clock() - t0
        elapsed = clock() - start
        durable = tracker.flush(30.0)
        stats = tracker.pending_stats()
        refused = {r.code: n for r, n in tracker.error_counts().items() if n}
        tracker.shutdown()

    times.sort()
    result = {
        "binding": "python",
        "path": path,
        "python": sys.version.split()[0],
        "calls_timed": args.calls,
        "warmup": args.warmup,
        "p50_ns": percentile(times, 0.50),
        "p99_ns": percentile(times, 0.99),
        "p999_ns": percentile(times, 0.999),
        "max_ns": times[-1],
        "mean_ns": sum(times) // len(times),
        "timed_loop_calls_per_s": round(args.calls * 1e9 / elapsed),
        "flushed": durable,
        "pending_events": stats.pending_events,
        "dropped_events": stats.dropped_events,
        "refused": refused,
    }
    print(
        f"python {result['python']}, {path}: track() p50 {result['p50_ns'] / 1000:.1f} µs, p99 {result['p99_ns'] / 1000:.1f} µs, "
        f"p99.9 {result['p999_ns'] / 1000:.1f} µs, {result['timed_loop_calls_per_s']:,} calls/s; "
        f"{result['pending_events']:,} events buffered of {args.calls + args.warmup:,}, "
        f"{result['dropped_events']:,} dropped; refused {refused or 'none'}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
