"""The example consumer against the real collector and kinesalite: a batch sent twice (as the
SDK resends one whose acknowledgement was lost) is consumed once, from v1 and v2 streams; and its
join of v2 event records with their batch records, on documents checked against the schemas."""

import copy
import json
import uuid
from collections import Counter
from datetime import datetime

import jsonschema
import pytest
import requests

from local_pipeline import ROOT, collector, kinesis_stream, local_pipeline
from tern_consumer import (
    BatchRecords,
    Deduper,
    Problems,
    consume,
    missing_seqs,
    read_records,
    records,
)

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


# --- v2: the join, on documents alone ------------------------------------------------------------

# The v1 record of docs/stream-record.md, with a session_id (the SDK sets one on every event).
V1_RECORD = {
    "v": 1,
    "event_id": "019ab7b2-4b00-7aaa-8bbb-cccccccccccc",
    "app_id": "shop",
    "install_id": "019ab7a0-0000-7000-8000-000000000001",
    "seq": 42,
    "name": "checkout",
    "created_at": "2026-11-24T21:34:50.001Z",
    "event_time": "2026-11-24T21:34:50.412Z",
    "sent_at": "2026-11-24T21:34:56.789Z",
    "received_at": "2026-11-24T21:34:57.190Z",
    "properties": {"total": 59.9, "currency": "CHF"},
    "context": {"app": {"id": "com.example.shop", "version": "4.2.0"},
                "os": {"name": "Android", "version": "15"}},
    "user_id": "u-1234",
    "session_id": "019ab7b0-0000-7000-8000-00000000000a",
    "batch_id": "019ab7b2-4c1e-7d2a-9f3e-5a1b2c3d4e5f",
    "sdk": {"name": "tern-sdk-kotlin", "version": "0.1.0"},
    "collector_id": "tern-4f5a6b7c8d9e",
}
SHARED = ("sent_at", "received_at", "context", "sdk", "collector_id")


def split(v1: dict, events: int = 1) -> tuple[dict, dict]:
    """The v1 record as the collector writes it in v2: (event record, batch record), as
    protocol/src/record.rs splits it."""
    event = {k: val for k, val in v1.items() if k not in SHARED}
    event["v"] = 2
    batch = {"v": 2, "kind": "batch", "batch_id": v1["batch_id"], "app_id": v1["app_id"],
             "install_id": v1["install_id"], **{k: v1[k] for k in SHARED}, "events": events}
    return event, batch


def v1_event(seq: int, **fields) -> dict:
    """Another event of V1_RECORD's upload."""
    return dict(copy.deepcopy(V1_RECORD), seq=seq, event_id=str(uuid.uuid4()), **fields)


def schema(version: int):
    """A validator of record.v{version}.schema.json."""
    path = ROOT / f"protocol/schema/record.v{version}.schema.json"
    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


def test_the_documents_of_these_tests_are_what_the_schemas_describe():
    v1, v2 = schema(1), schema(2)
    event, batch = split(V1_RECORD)
    v1.validate(V1_RECORD)
    v2.validate(event)
    v2.validate(batch)
    assert not v2.is_valid(V1_RECORD) and not v1.is_valid(event) and not v1.is_valid(batch)


def read(documents, **kw):
    """read_records over `documents`: (events handed over, deduper, problems, report lines, skipped)."""
    events, lines, skipped = [], [], Counter()
    problems = Problems(report=lines.append)
    deduper = read_records(documents, events.append, Deduper(), problems=problems, skipped=skipped, **kw)
    return events, deduper, problems, lines, skipped


def test_a_v2_event_joined_with_its_batch_record_is_the_v1_record_but_for_v():
    event, batch = split(V1_RECORD)
    events, deduper, problems, _, skipped = read([batch, event])
    assert events == [dict(V1_RECORD, v=2)]
    assert problems.total() == 0 and deduper.duplicates == 0 and not skipped


def test_a_v2_event_without_user_or_session_joins_without_them():
    v1 = {k: val for k, val in V1_RECORD.items() if k not in ("user_id", "session_id")}
    event, batch = split(v1)
    assert read([batch, event])[0] == [dict(v1, v=2)]


def test_a_resent_v2_upload_is_consumed_once_with_the_first_arrivals_clocks():
    e1, e2 = v1_event(1), v1_event(2)
    (event1, batch), (event2, _) = split(e1, events=2), split(e2, events=2)
    resent = dict(batch, received_at="2026-11-24T21:40:00.000Z", sent_at="2026-11-24T21:39:59.000Z",
                  collector_id="tern-000000000002")
    events, deduper, problems, _, _ = read([batch, event1, event2, resent, event1, event2])
    assert events == [dict(e1, v=2), dict(e2, v=2)]
    assert deduper.duplicates == 2 and problems.total() == 0


def test_v1_and_v2_records_in_one_stream_are_both_read():
    old = v1_event(1)
    new = v1_event(2, batch_id=str(uuid.uuid4()))
    event, batch = split(new)
    events, deduper, problems, _, _ = read([old, batch, event, old, event])
    assert events == [old, dict(new, v=2)]
    assert deduper.duplicates == 2 and problems.total() == 0


def test_a_v2_event_without_its_batch_record_is_reported_with_its_event_id_not_handed_over():
    event, batch = split(V1_RECORD)
    events, deduper, problems, lines, _ = read([event])
    assert events == [] and problems.counts == {"no_batch_record": 1}
    assert len(lines) == 1 and V1_RECORD["event_id"] in lines[0], lines
    # Not marked as seen: the upload resent later, batch record first, delivers it.
    events, deduper, problems, lines, _ = read([event, batch, event])
    assert events == [dict(V1_RECORD, v=2)] and problems.total() == 1 and deduper.duplicates == 0


def test_the_orphan_report_goes_to_stderr_by_default(capsys):
    event, _ = split(V1_RECORD)
    read_records([event], lambda r: pytest.fail("handed over"))
    assert V1_RECORD["event_id"] in capsys.readouterr().err


def test_a_batch_record_of_another_install_or_app_does_not_join():
    event, batch = split(V1_RECORD)
    for field in ("install_id", "app_id"):
        events, _, problems, lines, _ = read([dict(batch, **{field: "other"}), event])
        assert events == [] and problems.counts == {"batch_record_mismatch": 1}, field
        assert V1_RECORD["event_id"] in lines[0]


def test_a_batch_record_lacking_shared_fields_is_reported_and_its_events_too():
    event, batch = split(V1_RECORD)
    broken = {k: val for k, val in batch.items() if k != "context"}
    events, _, problems, lines, _ = read([broken, event])
    assert events == []
    assert problems.counts == {"bad_batch_record": 1, "no_batch_record": 1}
    assert "context" in lines[0] and V1_RECORD["event_id"] in lines[1]


def test_batch_records_kept_are_bounded_and_an_evicted_ones_events_are_reported():
    e1, e2 = v1_event(1), v1_event(2, batch_id=str(uuid.uuid4()))
    (event1, batch1), (event2, batch2) = split(e1), split(e2)
    events, _, problems, lines, _ = read([batch1, batch2, event2, event1], batches=BatchRecords(capacity=1))
    assert events == [dict(e2, v=2)]
    assert problems.counts == {"no_batch_record": 1} and e1["event_id"] in lines[0]


def test_a_duplicate_whose_batch_record_was_evicted_is_a_duplicate_not_a_problem():
    e1, e2 = v1_event(1), v1_event(2, batch_id=str(uuid.uuid4()))
    (event1, batch1), (event2, batch2) = split(e1), split(e2)
    events, deduper, problems, _, _ = read([batch1, event1, batch2, event2, event1],
                                           batches=BatchRecords(capacity=1))
    assert len(events) == 2 and deduper.duplicates == 1 and problems.total() == 0


def test_unknown_versions_and_kinds_are_skipped_and_counted_gaps_of_both_versions_routed():
    event, batch = split(V1_RECORD)
    gap = {"v": 1, "kind": "gap", "gap_id": str(uuid.uuid4()), "app_id": "shop", "install_id": "i",
           "reason": "cap_count", "ranges": [{"first": 1, "last": 2}], "count": 2,
           "at": "2026-11-24T21:30:00.000Z", "received_at": "2026-11-24T21:34:57.190Z",
           "batch_id": V1_RECORD["batch_id"], "sdk": V1_RECORD["sdk"], "collector_id": "c"}
    gap2 = dict(gap, v=2, gap_id=str(uuid.uuid4()))
    schema(2).validate(gap2)
    future = dict(event, v=3)
    other_kind = dict(batch, kind="session")
    v1_batch = dict(batch, v=1)  # batch records are v2 only: in v1 an unknown kind
    gaps = []
    events, _, problems, _, skipped = read(
        [future, batch, other_kind, v1_batch, gap, gap2, gap, event, {"v": "1"}], handle_gap=gaps.append)
    assert events == [dict(V1_RECORD, v=2)]
    assert gaps == [gap, gap2]
    assert skipped == {"v=3": 1, "kind=session": 1, "kind=batch": 1, "v='1'": 1}
    assert problems.total() == 0


# --- v2 through the real collector ----------------------------------------------------------------

def uploads():
    """Uploads with all that an event record can hold: user and session ids, a full context, a gap."""
    full = batch("install-a", 1, 20)
    full["context"] = {"app": {"id": "com.example.shop", "version": "4.2.0", "build": "420"},
                       "device": {"manufacturer": "Google", "model": "Pixel 9"},
                       "os": {"name": "Android", "version": "15"}, "locale": "de-CH",
                       "timezone": "Europe/Zurich"}
    for e in full["events"][10:]:
        e.update(user_id="u-1", session_id=str(uuid.uuid4()))
    full["gaps"] = [{"gap_id": str(uuid.uuid4()), "reason": "cap_count", "ranges": [{"first": 30, "last": 31}],
                     "count": 2, "at": "2026-11-24T09:59:00.000Z"}]
    return [full, batch("install-a", 21, 5), batch("install-b", 1, 7)]


def send(urls, bodies):
    """Each upload to the first collector, again to it (answered from its memory), and again to
    the second (no such memory: written again, same batch_id and event_ids), as the SDK resends a
    batch whose acknowledgement was lost."""
    first, other = urls
    for body in bodies:
        post(first, body)
        post(first, body)
        post(other, body)


def run(bodies, *collector_args):
    """The uploads through two collectors (instances c-1 and c-2) into a fresh two-shard stream:
    (events and gaps consumed, the stream's documents as read, problems, skipped)."""
    with kinesis_stream(shards=2) as (client, stream, endpoint):
        with collector(endpoint, stream, KEY, "shop", "--instance-id", "c-1", *collector_args) as a, \
                collector(endpoint, stream, KEY, "shop", "--instance-id", "c-2", *collector_args) as b:
            send((a, b), bodies)
        events, gaps, lines, skipped = [], [], [], Counter()
        problems = Problems(report=lines.append)
        deduper = consume(client, stream, events.append, Deduper(), handle_gap=gaps.append,
                          problems=problems, skipped=skipped, poll_interval=0.05)
        documents = list(records(client, stream, poll_interval=0.05))
    return events, gaps, deduper, documents, problems, lines, skipped


def at(timestamp):
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def test_a_v2_stream_gives_the_events_a_v1_stream_gives_each_once():
    bodies = uploads()
    v1_events, v1_gaps, v1_dedup, v1_docs, v1_problems, _, v1_skipped = run(bodies)
    events, gaps, dedup, docs, problems, lines, skipped = run(bodies, "--record-version", "2")

    # The v2 stream really is v2: a batch record per upload written (twice: two collectors),
    # slim event records, valid by the v2 schema.
    v2_schema = schema(2)
    for doc in docs:
        v2_schema.validate(doc)
    batch_records = [d for d in docs if d.get("kind") == "batch"]
    assert sorted(d["batch_id"] for d in batch_records) == sorted(b["batch_id"] for b in bodies for _ in "ab")
    assert {d["collector_id"] for d in batch_records} == {"c-1", "c-2"}
    assert all("context" not in d and "received_at" not in d for d in docs if "event_id" in d)
    # Each batch record precedes its events in its shard (the order read is shard by shard).
    met = set()
    for d in docs:
        if d.get("kind") == "batch":
            met.add(d["batch_id"])
        elif "event_id" in d:
            assert d["batch_id"] in met, d

    assert problems.total() == 0 and not skipped, lines
    assert v1_problems.total() == 0 and not v1_skipped
    # Every upload was written twice: 32 events and one gap record again.
    assert len(events) == len(v1_events) == 32 and dedup.duplicates == v1_dedup.duplicates == 32 + 1
    assert len({e["event_id"] for e in events}) == 32
    assert [g["gap_id"] for g in gaps] == [g["gap_id"] for g in v1_gaps] and gaps[0]["v"] == 2

    v1_by_id = {e["event_id"]: e for e in v1_events}
    clocks = {"v", "received_at", "event_time", "collector_id"}  # differ from run to run
    for e in events:
        old = v1_by_id[e["event_id"]]
        assert e.keys() == old.keys(), e["event_id"]
        assert e["v"] == 2 and old["v"] == 1
        for field in e.keys() - clocks:
            assert e[field] == old[field], (field, e["event_id"])
        # event_time is created_at moved by the same device-clock offset (received_at - sent_at).
        assert at(e["event_time"]) - at(e["received_at"]) == at(old["event_time"]) - at(old["received_at"])
        # The first arrival's provenance: the collector that wrote the batch first.
        assert e["collector_id"] == old["collector_id"] == "c-1"
    by_install = {}
    for e in events:
        by_install.setdefault(e["install_id"], []).append(e["seq"])
    assert by_install == {"install-a": list(range(1, 26)), "install-b": list(range(1, 8))}
    assert sum(1 for e in events if "session_id" in e) == 10


def test_a_v2_event_read_without_its_batch_record_is_reported_not_dropped(capsys):
    with local_pipeline(KEY, "shop", collector_args=("--record-version", "2")) as (client, stream, url):
        body = batch("install-o", 1, 3)
        post(url, body)
        documents = list(records(client, stream, poll_interval=0.05))
    # A reader that starts after the batch record (mid-stream): its events are reported by id.
    assert documents[0]["kind"] == "batch" and len(documents) == 4
    events = []
    read_records(documents[1:], events.append)
    err = capsys.readouterr().err
    assert events == []
    for e in body["events"]:
        assert e["event_id"] in err
