#!/usr/bin/env python3
"""The collector's CPU by stage, from a call-graph profile (docs/BENCHMARKS.md, *Collector*).

Usage: perf script -i perf.data -F ip,sym | python3 tools/perf-stages.py

`perf.data` comes from `perf record --call-graph dwarf` of a tern-collector built with symbols
(the recipe in docs/BENCHMARKS.md). Each sample counts once, for the first stage below whose
frames appear anywhere in its stack (so the order matters: signing inside the SDK's call is
signing, not "SDK other"). Samples in no stage are summed by their leaf frame; those under 1 %
are summed together.
"""

import collections
import sys

# (stage, substrings of frame names), first match wins.
STAGES = [
    ("SigV4 signing (SHA-256 of the body)", ["aws_sigv4", "sha2::"]),
    ("PutRecords body written (base64)", ["request_body"]),
    ("PutRecords answer read (answer.rs)", ["sink::kinesis::answer"]),
    ("PutRecords answer parsed (SDK)", ["aws_smithy_json", "de_put_records"]),
    ("SDK other (orchestrator, HTTP client, socket writes)",
     ["aws_smithy", "aws_sdk_kinesis", "hyper::client", "hyper_util::client"]),
    ("zstd decompression", ["ZSTD_", "zstd::"]),
    ("nesting scan", ["nesting_over"]),
    ("parse: properties", ["PropertiesVisitor", "PropertyValueVisitor", "EventProperties",
                           "decode::canonical"]),
    ("parse: the rest of the batch", ["parse_batch", "parse_noting_unknown_fields"]),
    ("enrichment (records written)", ["tern_collector::enrich"]),
    ("resend check (MD5)", ["md5::", "content_digest"]),
    ("dispatcher", ["sink::kinesis::dispatch"]),
    ("upload handling, other", ["prepare_decoded", "handle_batch"]),
    ("HTTP server (hyper)", ["hyper::proto", "hyper::server", "connections::serve"]),
    ("tokio runtime", ["tokio::"]),
]


def main() -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    frames: list[str] = []

    def flush() -> None:
        nonlocal total
        if not frames:
            return
        total += 1
        stack = "\n".join(frames)
        for stage, keys in STAGES:
            if any(k in stack for k in keys):
                counts[stage] += 1
                return
        leaf = frames[0].split(None, 1)
        counts["other: " + (leaf[1] if len(leaf) > 1 else leaf[0])[:60]] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            frames.clear()
        elif line[0] in " \t":
            frames.append(line.strip())
    flush()
    if not total:
        sys.exit("no samples with call chains on stdin")
    small = 0
    for stage, n in counts.most_common():
        if stage.startswith("other: ") and n / total < 0.01:
            small += n
            continue
        print(f"{100 * n / total:5.1f} %  {stage}")
    print(f"{100 * small / total:5.1f} %  other (each under 1 %)")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
