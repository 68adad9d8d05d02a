"""The anchors for tern-lake's ingest cost, in CPU seconds of this process:

- write: Python `deltalake.write_deltalake` appending the rows the Rust benchmark wrote (read
  from its Parquet file before timing) as Arrow batches, in commits of the same size,
  partitioned the same way: the write alone;
- end to end: what a data engineer would script from the same stream record documents (JSON
  lines): json.loads, the same columns (context flattened, properties and context as JSON
  text), pyarrow, write_deltalake.

    .venv/bin/python tools/lake/bench_write.py OUT_DIR [--commit-rows N]
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import write_deltalake


def write(out: str, table: pa.Table, name: str, commit_rows: int) -> None:
    lake = os.path.join(out, name)
    shutil.rmtree(lake, ignore_errors=True)
    for start in range(0, table.num_rows, commit_rows):
        write_deltalake(lake, table.slice(start, commit_rows), mode="append", partition_by=["event_date"])


def flatten(d: dict) -> dict:
    c = d.get("context", {})
    app, os_, dev = c.get("app", {}), c.get("os", {}), c.get("device", {})
    return {
        "event_id": d["event_id"], "event_time": d["event_time"], "received_at": d["received_at"],
        "name": d["name"], "install_id": d["install_id"], "seq": d["seq"], "app_id": d["app_id"],
        "user_id": d.get("user_id"), "session_id": d.get("session_id"),
        "created_at": d["created_at"], "sent_at": d["sent_at"],
        "app_package": app.get("id"), "app_version": app.get("version"), "app_build": app.get("build"),
        "os_name": os_.get("name"), "os_version": os_.get("version"),
        "device_manufacturer": dev.get("manufacturer"), "device_model": dev.get("model"),
        "locale": c.get("locale"), "timezone": c.get("timezone"),
        "sdk_name": d["sdk"]["name"], "sdk_version": d["sdk"]["version"], "batch_id": d["batch_id"],
        "collector_id": d["collector_id"], "v": d["v"],
        "properties": json.dumps(d["properties"]), "context": json.dumps(c),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--commit-rows", type=int, default=100_000)
    args = parser.parse_args()

    table = pq.read_table(os.path.join(args.out, "rows.parquet"))
    cpu = time.process_time()
    write(args.out, table, "lake-python", args.commit_rows)
    write_cpu = time.process_time() - cpu

    with open(os.path.join(args.out, "documents.jsonl"), "rb") as f:
        lines = f.read().splitlines()
    cpu = time.process_time()
    rows = [flatten(json.loads(line)) for line in lines]
    t = pa.Table.from_pylist(rows)
    for col in ["event_time", "received_at", "created_at", "sent_at"]:
        ts = pc.cast(t[col], pa.timestamp("us", tz="UTC"))
        t = t.set_column(t.schema.get_field_index(col), col, ts)
    t = t.append_column("event_date", pc.cast(t["event_time"], pa.date32()))
    write(args.out, t, "lake-python-e2e", args.commit_rows)
    e2e_cpu = time.process_time() - cpu

    n = table.num_rows
    print(json.dumps({
        "rows": n,
        "write": {"cpu_s": write_cpu, "rows_per_cpu_s": n / write_cpu},
        "end_to_end": {"cpu_s": e2e_cpu, "rows_per_cpu_s": n / e2e_cpu},
    }))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # see read_table.py: deltalake 1.6 can abort the interpreter's teardown
