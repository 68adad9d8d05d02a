use super::*;
use crate::dead_letter::TRUNCATED_NOTE;
use crate::limits::{MAX_DEAD_LETTER_FIELD_BYTES, MAX_DEAD_LETTER_PROPERTIES_BYTES};
use tern_protocol::{Context, SdkInfo};

fn batch(sent_at: DateTime<Utc>, sent_uptime: Option<u64>) -> Batch {
    Batch {
        batch_id: Uuid::now_v7(),
        install_id: "i".into(),
        sent_at,
        sent_uptime_ms: sent_uptime,
        clock_id: Some("c1".into()),
        sdk: SdkInfo {
            name: "t".into(),
            version: "0".into(),
        },
        context: Context::default(),
        events: vec![],
        dropped: Default::default(),
        gaps: Vec::new(),
    }
}

fn event(created_at: DateTime<Utc>, uptime: Option<u64>, clock: &str) -> Event {
    Event {
        event_id: Uuid::now_v7(),
        seq: 1,
        name: "e".into(),
        created_at,
        uptime_ms: uptime,
        clock_id: Some(clock.into()),
        properties: Default::default(),
        user_id: None,
        session_id: None,
    }
}

#[test]
fn a_device_three_hours_behind_is_corrected_by_wall_offset() {
    let received = Utc::now();
    let skew = ChronoDuration::hours(3);
    let b = batch(received - skew, None);
    let e = event(received - skew - ChronoDuration::seconds(60), None, "c1");
    assert_eq!(
        corrected_event_time(&b, &e, received),
        Some(received - ChronoDuration::seconds(60))
    );
}

#[test]
fn events_older_than_any_sdk_keeps_are_absurd() {
    let received = Utc::now();
    let b = batch(received, None);
    assert!(event_time(
        &b,
        &event(received - ChronoDuration::days(59), None, "c9"),
        received
    )
    .is_ok());
    let (code, _) = event_time(
        &b,
        &event(received - ChronoDuration::days(61), None, "c9"),
        received,
    )
    .unwrap_err();
    assert_eq!(code, "invalid_timestamp");
    // A device clock years off but consistent is corrected, not refused.
    let skewed = batch(received - ChronoDuration::days(3000), None);
    let e = event(
        received - ChronoDuration::days(3000) - ChronoDuration::seconds(5),
        None,
        "c9",
    );
    assert!(event_time(&skewed, &e, received).is_ok());
}

#[test]
fn the_monotonic_clock_wins_when_the_clock_ids_match() {
    let received = Utc::now();
    // The wall clock jumped by a day between the event and the send; uptime did not.
    let b = batch(received + ChronoDuration::days(1), Some(100_000));
    let e = event(received - ChronoDuration::days(5), Some(40_000), "c1");
    assert_eq!(
        corrected_event_time(&b, &e, received),
        Some(received - ChronoDuration::seconds(60))
    );
    // Another clock (the app restarted): fall back to the wall offset, clamped to arrival.
    let e = event(received, Some(40_000), "c0");
    assert_eq!(
        corrected_event_time(&b, &e, received),
        Some(received - ChronoDuration::days(1))
    );
}

/// Client-controlled clock values far out of range (1e17 ms is ~3 million years) make the
/// event invalid; they must never panic (a panic was a 503 the SDK retried forever).
#[test]
fn absurd_clock_values_are_invalid_events_not_panics() {
    let received = Utc::now();
    let huge = 100_000_000_000_000_000u64;
    for (sent, at) in [
        (huge, 0),
        (u64::MAX, 0),
        (u64::MAX, 1),
        (i64::MAX as u64, 0),
    ] {
        let b = batch(received, Some(sent));
        let e = event(received, Some(at), "c1");
        assert_eq!(corrected_event_time(&b, &e, received), None, "{sent} {at}");
        let (code, message) = event_time(&b, &e, received).unwrap_err();
        assert_eq!(code, "invalid_timestamp", "{message}");
    }
    // A large but representable age is simply too old.
    let b = batch(received, Some(40 * 365 * 86_400_000));
    let (code, _) = event_time(&b, &event(received, Some(0), "c1"), received).unwrap_err();
    assert_eq!(code, "invalid_timestamp");
    // Wall clocks at the ends of the parseable range.
    let far_future = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .unwrap()
        .to_utc();
    let far_past = DateTime::parse_from_rfc3339("0000-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    for (sent_at, created_at) in [(far_past, far_future), (far_future, far_past)] {
        let b = batch(sent_at, None);
        let _ = event_time(&b, &event(created_at, None, "c9"), received);
    }
}

#[test]
fn prepare_lists_absurd_clocks_as_refused_and_dead_letters_them_with_a_dead_letter_stream() {
    let received = Utc::now();
    let mut b = batch(received, Some(100_000_000_000_000_000));
    b.events = vec![
        event(received, Some(1_000), "c1"),
        event(received, Some(1_000), "c9"),
    ];
    b.events[1].seq = 2;
    let upload = Upload {
        app_id: "app",
        received_at: received,
        collector_id: "c",
        record_version: RECORD_VERSION,
    };
    let prepared = prepare(&b, &upload, true).unwrap();
    assert_eq!(
        (prepared.records.len(), prepared.dead_letters.len()),
        (1, 1)
    );
    let letter: serde_json::Value = serde_json::from_slice(&prepared.dead_letters[0].data).unwrap();
    assert_eq!(letter["reason"], "invalid_timestamp");
    assert_eq!(letter["event"]["seq"], 1);
    assert!(letter["event"].get(TRUNCATED_NOTE).is_none(), "kept whole");
    assert_eq!(prepared.refused.len(), 1);
    assert_eq!(prepared.refused[0].event_id, b.events[0].event_id);
    assert_eq!(prepared.refused[0].reason, "invalid_timestamp");
    // Without a dead-letter stream: the same partial accept, no dead letters.
    let prepared = prepare(&b, &upload, false).unwrap();
    assert_eq!(
        (prepared.records.len(), prepared.dead_letters.len()),
        (1, 0)
    );
    assert_eq!(prepared.refused.len(), 1);
    assert_eq!(prepared.refused[0].seq, 1);
}

#[test]
fn each_gap_becomes_one_gap_record_keyed_by_install() {
    let received = Utc::now();
    let mut b = batch(received, None);
    b.gaps = vec![Gap {
        gap_id: Uuid::now_v7(),
        reason: "cap_bytes".into(),
        ranges: vec![tern_protocol::SeqRange { first: 2, last: 4 }],
        count: 3,
        at: received,
    }];
    let upload = Upload {
        app_id: "app",
        received_at: received,
        collector_id: "c",
        record_version: RECORD_VERSION,
    };
    let prepared = prepare(&b, &upload, false).unwrap();
    assert_eq!(prepared.gap_records.len(), 1);
    assert_eq!(&*prepared.gap_records[0].partition_key, "i");
    let record: serde_json::Value = serde_json::from_slice(&prepared.gap_records[0].data).unwrap();
    assert_eq!(record["kind"], "gap");
    assert_eq!(record["gap_id"], b.gaps[0].gap_id.to_string());
    assert_eq!(record["count"], 3);
    assert_eq!(prepared.gap_events.get("cap_bytes"), Some(&3));
}

/// Characters that JSON escapes to six bytes each (`\u0001`): the worst case per byte.
fn escaped(n: usize) -> String {
    "\u{1}".repeat(n)
}

fn parse_letter(entry: &Entry) -> DeadLetterRecord {
    serde_json::from_slice(&entry.data).unwrap()
}

/// Invalid events with megabytes in any string field, properties of up to 1 MiB, characters
/// that escape to six bytes, and the longest install id, app id and instance id the batch
/// checks and the configuration allow: every dead letter fits a Kinesis record, keeps the
/// event's id, seq and reason, and notes the original size of what was cut. (A 2 MiB name
/// used to make a 2 MiB dead letter that Kinesis refused, failing the upload forever.)
#[test]
fn every_dead_letter_fits_a_kinesis_record_whatever_the_event_holds() {
    use crate::limits::{MAX_APP_ID_BYTES, MAX_ID_BYTES, MAX_INSTANCE_ID_BYTES};
    let received = Utc::now();
    let mut b = batch(received, None);
    b.install_id = escaped(MAX_ID_BYTES);
    let (app_id, collector_id) = (escaped(MAX_APP_ID_BYTES), escaped(MAX_INSTANCE_ID_BYTES));
    let upload = Upload {
        app_id: &app_id,
        received_at: received,
        collector_id: &collector_id,
        record_version: RECORD_VERSION,
    };
    let big = 2 * 1024 * 1024;
    let properties = |bytes: usize| {
        let mut p = serde_json::Map::new();
        p.insert("p".into(), escaped(bytes / 6).into());
        p
    };
    let base = event(received, None, "c1");
    let cases: Vec<(&str, Event)> = vec![
        (
            "invalid_name",
            Event {
                name: escaped(big),
                ..base.clone()
            },
        ),
        (
            "invalid_name",
            // Two-byte characters across the cut.
            Event {
                name: format!("a{}", "é".repeat(big / 2)),
                ..base.clone()
            },
        ),
        (
            "invalid_id",
            Event {
                user_id: Some(escaped(big)),
                ..base.clone()
            },
        ),
        (
            "invalid_id",
            Event {
                session_id: Some(escaped(big)),
                ..base.clone()
            },
        ),
        (
            "invalid_properties",
            Event {
                properties: properties(MAX_RECORD_BYTES),
                ..base.clone()
            },
        ),
        (
            // Both ids at once, properties just under the size kept.
            "invalid_seq",
            Event {
                seq: 0,
                user_id: Some(escaped(big)),
                session_id: Some(escaped(big)),
                properties: properties(MAX_DEAD_LETTER_PROPERTIES_BYTES - 16),
                ..base.clone()
            },
        ),
        (
            // Every field at once.
            "invalid_name",
            Event {
                seq: 0,
                name: escaped(MAX_DEAD_LETTER_FIELD_BYTES + 1),
                user_id: Some(escaped(big)),
                session_id: Some(escaped(big)),
                properties: properties(MAX_RECORD_BYTES),
                ..base.clone()
            },
        ),
    ];
    let expected: Vec<&str> = cases.iter().map(|(reason, _)| *reason).collect();
    b.events = cases.into_iter().map(|(_, e)| e).collect();
    let prepared = prepare(&b, &upload, true).unwrap();
    assert!(prepared.records.is_empty());
    assert_eq!(prepared.dead_letters.len(), b.events.len());
    for ((entry, event), reason) in prepared.dead_letters.iter().zip(&b.events).zip(expected) {
        assert!(
            entry.size() <= MAX_RECORD_BYTES,
            "{reason}: {} bytes",
            entry.size()
        );
        let letter = parse_letter(entry);
        assert_eq!(letter.reason, reason);
        assert_eq!(letter.event["event_id"], event.event_id.to_string());
        assert_eq!(letter.event["seq"], event.seq);
        let cut = &letter.event[TRUNCATED_NOTE];
        for (field, value) in [
            ("name", Some(&event.name)),
            ("user_id", event.user_id.as_ref()),
            ("session_id", event.session_id.as_ref()),
        ] {
            let Some(value) = value.filter(|v| v.len() > MAX_DEAD_LETTER_FIELD_BYTES) else {
                continue;
            };
            assert_eq!(cut[field], value.len(), "{reason}: {field}");
            let kept = letter.event[field].as_str().unwrap();
            assert!(value.starts_with(kept), "{reason}: {field} is a prefix");
            assert!(kept.len() <= MAX_DEAD_LETTER_FIELD_BYTES);
        }
        let properties_len = to_json(&event.properties).unwrap().len();
        if properties_len > MAX_DEAD_LETTER_PROPERTIES_BYTES {
            assert_eq!(cut["properties"], properties_len, "{reason}");
            assert_eq!(
                letter.event["properties"]["_tern_original_bytes"],
                properties_len
            );
        } else {
            assert_eq!(
                letter.event["properties"],
                serde_json::json!(event.properties)
            );
        }
    }
}

#[test]
fn unknown_drop_reasons_are_summed_under_other() {
    let reported: BTreeMap<String, u64> = [
        ("queue_full".to_owned(), 2),
        ("made-up-1".to_owned(), u64::MAX),
        ("made-up-2".to_owned(), 5),
    ]
    .into_iter()
    .collect();
    let dropped = dropped_by_known_reason(&reported);
    assert_eq!(
        dropped.into_iter().collect::<Vec<_>>(),
        [("other", u64::MAX), ("queue_full", 2)]
    );
}

/// `prepare` writes records by splicing the upload's shared parts (`record_json`); they must be
/// byte for byte what serializing a `StreamRecord` (v1) or an `EventRecordV2` (v2) gives,
/// whatever the fields hold.
#[test]
fn spliced_records_are_the_serialized_stream_record_byte_for_byte() {
    for record_version in tern_protocol::RECORD_VERSIONS {
        spliced_records_are_serialized_records(record_version);
    }
}

fn spliced_records_are_serialized_records(record_version: u32) {
    use tern_protocol::wire::{AppInfo, DeviceInfo, OsInfo};
    let received = Utc::now();
    let mut b = batch(received - ChronoDuration::milliseconds(1234), Some(9_000));
    b.install_id = "inst \"quoted\" \\ é 🦀 \u{1}".into();
    b.sdk = SdkInfo {
        name: "tern-sdk-kotlin".into(),
        version: "1.2.3-\"rc\"".into(),
    };
    b.context = Context {
        app: AppInfo {
            id: Some("com.example.shop".into()),
            version: None,
            build: Some("42".into()),
        },
        device: DeviceInfo {
            manufacturer: Some("Google".into()),
            model: Some("Pixel 8 \u{7f}".into()),
        },
        os: OsInfo {
            name: Some("Android".into()),
            version: Some("15".into()),
        },
        locale: Some("de-CH".into()),
        timezone: None,
    };
    let upload = Upload {
        app_id: "app/ü",
        received_at: received,
        collector_id: "collector-1",
        record_version,
    };
    let shared = record_json::RecordJson::new(&b, &upload).unwrap();
    let times = [
        "2026-11-24T21:34:56.123Z",
        "2026-11-24T21:34:56Z",
        "2026-11-24T23:34:56.999999+02:00",
        "0000-01-01T00:00:00.001Z",
        "9999-12-31T23:59:59.999Z",
        "0000-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        "2016-12-31T23:59:60.500Z",
        "1970-01-01T00:00:00Z",
    ];
    for (i, at) in times.iter().enumerate() {
        let t = DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc);
        let mut e = event(t, Some(5), "c1");
        e.seq = u64::MAX - i as u64;
        e.name = format!("screen_view:{i}");
        if i % 2 == 0 {
            e.user_id = Some(format!("user \"{i}\" ✓"));
        }
        if i % 3 == 0 {
            e.session_id = Some(format!("s{i}"));
        }
        e.properties = serde_json::json!({
            "n": i, "f": 1.5e300, "neg": -7, "s": "tab\there \u{2028}", "nested": {"a": [1, null, true]},
        })
        .as_object()
        .unwrap()
        .clone();
        for event_time in [t, received] {
            let record = stream_record(&b, &e, event_time, &upload);
            let expected = if record_version == RECORD_VERSION_2 {
                serde_json::to_vec(&record.to_v2(1).0).unwrap()
            } else {
                serde_json::to_vec(&record).unwrap()
            };
            let properties = serde_json::to_vec(&e.properties).unwrap();
            let spliced = shared.record(&e, &event_time, &properties).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&spliced),
                String::from_utf8_lossy(&expected),
                "{at}"
            );
        }
    }
}
