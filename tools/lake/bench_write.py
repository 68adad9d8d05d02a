"""The anchor for tern-lake's write cost: Python `deltalake.write_deltalake` appending the same
rows (read from the Parquet file the Rust benchmark wrote) as Arrow batches, in commits of the
same size, partitioned the same way. Prints CPU and wall seconds as JSON.

    .venv/bin/python tools/lake/bench_write.py ROWS_PARQUET OUT_DIR [--commit-rows N]
"""

import argparse
import json
import os
import shutil
import sys
import time

import pyarrow.parquet as pq
from deltalake import write_deltalake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows")
    parser.add_argument("out")
    parser.add_argument("--commit-rows", type=int, default=100_000)
    args = parser.parse_args()
    table = pq.read_table(args.rows)
    lake = os.path.join(args.out, "lake-python")
    shutil.rmtree(lake, ignore_errors=True)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, table.num_rows, args.commit_rows):
        write_deltalake(
            lake,
            table.slice(start, args.commit_rows),
            mode="append",
            partition_by=["event_date"],
        )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "write": {"cpu_s": cpu, "wall_s": wall, "rows_per_cpu_s": table.num_rows / cpu},
            }
        )
    )


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # see read_table.py: deltalake 1.6 can abort the interpreter's teardown
