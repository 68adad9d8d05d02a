"""An independent reader of the lake's `events` table (Python `deltalake`, not Tern's code).

Prints one JSON object: the row count, the distinct event_ids, the rows and the data files per
event_date, so a test can compare them with what `tern-lake sql` answers and count the files
compaction left.

    .venv/bin/python tools/lake/read_table.py LAKE_DIR [--version N]
"""

import argparse
import collections
import json
import os
import re
import sys
from urllib.parse import unquote

from deltalake import DeltaTable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lake", help="the lake directory (events is a table under it)")
    parser.add_argument("--version", type=int, help="read this table version")
    args = parser.parse_args()
    table = DeltaTable(os.path.join(args.lake, "events"), version=args.version)
    data = table.to_pyarrow_table(columns=["event_id", "event_date"])
    ids = data.column("event_id").to_pylist()
    per_day = collections.Counter(str(d) for d in data.column("event_date").to_pylist())
    files_per_day = collections.Counter(
        match.group(1)
        for match in (re.search(r"event_date=([^/]+)/", unquote(u)) for u in table.file_uris())
        if match
    )
    print(
        json.dumps(
            {
                "version": table.version(),
                "rows": len(ids),
                "distinct_ids": len(set(ids)),
                "per_day": dict(sorted(per_day.items())),
                "files": len(table.file_uris()),
                "files_per_day": dict(sorted(files_per_day.items())),
                "protocol": {
                    "min_reader_version": table.protocol().min_reader_version,
                    "min_writer_version": table.protocol().min_writer_version,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # deltalake 1.6's runtime threads can abort the interpreter's teardown ("terminate called
    # without an active exception", about one run in five here): the answer is printed, so
    # leave without the teardown.
    os._exit(0)
