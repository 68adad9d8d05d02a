"""Test helper: kinesalite, a stream and a real tern-collector on 127.0.0.1, for the Python tests
(the example consumer's and the Python bindings'). Everything started is stopped on exit."""

import contextlib
import os
import subprocess
import uuid
from pathlib import Path

from tern_consumer import kinesis_client

ROOT = Path(__file__).resolve().parents[2]


def _start(cmd, **kw):
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True, **kw)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), f"{cmd[0]} printed {line!r}"
    return proc, "http://" + line.removeprefix("listening on ")


def _stop(proc):
    proc.kill()
    proc.wait()


@contextlib.contextmanager
def kinesis_stream(shards: int = 1):
    """Yields (boto3 Kinesis client, stream name, kinesalite endpoint URL)."""
    kinesalite, endpoint = _start(["node", "tools/kinesalite.js", "0"])
    try:
        stream = f"py-{uuid.uuid4().hex}"
        client = kinesis_client(endpoint)
        client.create_stream(StreamName=stream, ShardCount=shards)
        client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
        yield client, stream, endpoint
    finally:
        _stop(kinesalite)


@contextlib.contextmanager
def collector(endpoint: str, stream: str, write_key: str, app_id: str, *args: str):
    """Yields the URL of a tern-collector writing to `stream`; `args` are more of its flags."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", TERN_LOG="error")
    proc, url = _start(
        [str(ROOT / "target/debug/tern-collector"), "--listen", "127.0.0.1:0", "--stream", stream,
         "--kinesis-endpoint", endpoint, "--write-key", write_key, "--app-id", app_id, *args],
        env=env,
    )
    try:
        yield url
    finally:
        _stop(proc)


@contextlib.contextmanager
def local_pipeline(write_key: str, app_id: str, shards: int = 1, collector_args: tuple[str, ...] = ()):
    """Yields (boto3 Kinesis client, stream name, collector URL)."""
    with kinesis_stream(shards) as (client, stream, endpoint), \
            collector(endpoint, stream, write_key, app_id, *collector_args) as url:
        yield client, stream, url
