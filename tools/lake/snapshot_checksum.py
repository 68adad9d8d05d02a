"""The row count and checksum of a version of the lake's `events` table, computed from Python
`deltalake` alone (not Tern's code): the same number `tern-lake snapshot create` records, so a
training job can check that it read a snapshot's rows, byte for byte.

    .venv/bin/python tools/lake/snapshot_checksum.py LAKE_DIR --version N

Prints one JSON object: {"version", "rows", "checksum"}. The format, `tern-rows-v1`, is
described in lake/src/checksum.rs and docs/lake.md (Snapshots).
"""

import argparse
import hashlib
import json
import os
import struct
import sys

import pyarrow as pa
from deltalake import DeltaTable

FORMAT = "tern-rows-v1"

# Delta type name → (Arrow type to cast to, how one value is packed).
KINDS = {
    "string": (pa.string(), None),
    "binary": (pa.binary(), None),
    "long": (pa.int64(), "<q"),
    "integer": (pa.int32(), "<i"),
    "short": (pa.int16(), "<h"),
    "byte": (pa.int8(), "<b"),
    "boolean": (pa.bool_(), "<?"),
    "double": (pa.float64(), "<d"),
    "float": (pa.float32(), "<f"),
    # Days since 1970-01-01 and microseconds since the epoch, read as plain integers.
    "date": (pa.int32(), "<i"),
    "timestamp": (pa.int64(), "<q"),
    "timestamp_ntz": (pa.int64(), "<q"),
}


def column_values(column: pa.ChunkedArray, type_name: str) -> list:
    target, _ = KINDS[type_name]
    if type_name in ("timestamp", "timestamp_ntz"):
        column = column.cast(pa.timestamp("us", tz="UTC" if type_name == "timestamp" else None))
        column = column.cast(pa.int64())
    elif type_name == "date":
        column = column.cast(pa.date32()).cast(pa.int32())
    else:
        column = column.cast(target)
    return column.to_pylist()


def checksum(table: DeltaTable) -> dict:
    fields = [(f.name, f.type.type) for f in table.schema().fields]
    for name, type_name in fields:
        if type_name not in KINDS:
            raise SystemExit(f"column {name} has type {type_name}, which {FORMAT} does not cover")
    data = table.to_pyarrow_table(columns=[name for name, _ in fields])
    columns = [column_values(data.column(name), t) for name, t in fields]
    packers = [KINDS[t][1] for _, t in fields]
    digests = []
    for i in range(data.num_rows):
        row = bytearray()
        for values, packer in zip(columns, packers):
            value = values[i]
            if value is None:
                row += b"\x00"
                continue
            row += b"\x01"
            if packer is None:
                raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                row += struct.pack("<I", len(raw)) + raw
            else:
                row += struct.pack(packer, value)
        digests.append(hashlib.sha256(row).digest())
    digests.sort()
    total = hashlib.sha256()
    total.update(f"{FORMAT}\n".encode())
    for name, type_name in fields:
        total.update(f"{name}:{type_name}\n".encode())
    total.update(b"\n")
    for digest in digests:
        total.update(digest)
    return {"version": table.version(), "rows": len(digests), "checksum": "sha256:" + total.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lake", help="the lake directory (events is a table under it)")
    parser.add_argument("--version", type=int, required=True, help="the table version")
    args = parser.parse_args()
    table = DeltaTable(os.path.join(args.lake, "events"), version=args.version)
    print(json.dumps(checksum(table)))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # As in read_table.py: deltalake's runtime threads can abort the interpreter's teardown.
    os._exit(0)
