"""The example consumer against the real collector and kinesalite: a batch sent twice (as the
SDK resends one whose acknowledgement was lost) is consumed once."""

import json
import uuid

import pytest
import requests

from local_pipeline import local_pipeline
from tern_consumer import Deduper, consume, missing_seqs

KEY = "consumer-test-key"


@pytest.fixture()
def pipeline():
    with local_pipeline(KEY, "shop", shards=2) as p:
        yield p


def batch(install, first_seq, n):
    return {
        "batch_id": str(uuid.uuid4()),
        "install_id": install,
        "sent_at": "2026-11-24T10:00:00.000Z",
        "sdk": {"name": "python-test", "version": "0"},
        "context": {"os": {"name": "Android"}},
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "seq": first_seq + i,
                "name": "screen_view",
                "created_at": "2026-11-24T09:59:59.000Z",
                "properties": {"i": i},
            }
            for i in range(n)
        ],
    }


def post(url, body):
    r = requests.post(f"{url}/v1/batch", data=json.dumps(body), timeout=30,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def test_duplicates_are_consumed_once(pipeline):
    client, stream, url = pipeline
    first = batch("install-a", 1, 20)
    post(url, first)
    # Resent to the same instance: answered from its memory of acknowledged batches, not
    # written again.
    post(url, first)
    # Resent to another instance (which has no such memory): written again. A new batch_id
    # stands in for "another instance" here; the events, and their event_ids, are the same.
    post(url, dict(first, batch_id=str(uuid.uuid4())))
    post(url, batch("install-a", 21, 5))
    post(url, batch("install-b", 1, 7))

    seen = []
    deduper = consume(client, stream, seen.append, Deduper(), poll_interval=0.05)

    assert len(seen) == 32
    assert deduper.duplicates == 20
    assert len({r["event_id"] for r in seen}) == 32
    by_install = {}
    for r in seen:
        by_install.setdefault(r["install_id"], []).append(r["seq"])
    # One install's events are on one shard, in order.
    assert by_install["install-a"] == list(range(1, 26))
    assert by_install["install-b"] == list(range(1, 8))
    assert all(r["app_id"] == "shop" for r in seen)


def test_deduper_is_bounded():
    d = Deduper(capacity=2)
    assert d.first("a") and d.first("b") and d.first("c")
    assert len(d.seen) == 2
    assert d.first("a"), "the oldest id was forgotten"
    assert not d.first("c") and d.duplicates == 1


def test_gap_records_are_not_events_and_complete_the_seqs(pipeline):
    client, stream, url = pipeline
    with_gaps = batch("install-g", 11, 5)
    with_gaps["gaps"] = [{
        "gap_id": str(uuid.uuid4()), "reason": "cap_count",
        "ranges": [{"first": 1, "last": 8}], "count": 8, "at": "2026-11-24T09:59:00.000Z",
    }]
    ack = post(url, with_gaps)
    assert ack["gaps"] == 1
    # Sent again under a new batch_id (as another instance would write it): the gap record is
    # in the stream twice with the same gap_id.
    post(url, dict(with_gaps, batch_id=str(uuid.uuid4())))
    # seqs 9 and 10 are still on the device.

    events, gaps = [], []
    consume(client, stream, events.append, Deduper(), handle_gap=gaps.append, poll_interval=0.05)

    assert sorted(r["seq"] for r in events) == list(range(11, 16))
    assert all("kind" not in r for r in events)
    assert len(gaps) == 1 and gaps[0]["kind"] == "gap" and gaps[0]["reason"] == "cap_count"
    assert missing_seqs(events, gaps) == {"install-g": 2}
    # Without a gap handler gap records are skipped, never handed over as events.
    only_events = []
    consume(client, stream, only_events.append, Deduper(), poll_interval=0.05)
    assert len(only_events) == 5 and all("event_id" in r for r in only_events)
