//! Sample documents for the lake's unit tests (`decode`'s and `rules`'), owned by neither.

/// A valid stream record v1 document.
pub const GOOD_RECORD: &str = r#"{"v":1,"event_id":"019ab7b2-4b00-7aaa-8bbb-cccccccccccc","app_id":"shop",
        "install_id":"i-1","seq":42,"name":"checkout","created_at":"2026-11-24T21:34:50.001Z",
        "event_time":"2026-11-24T21:34:50.412Z","sent_at":"2026-11-24T21:34:56.789Z",
        "received_at":"2026-11-24T21:34:57.190Z","properties":{"total":59.9},
        "context":{"app":{"version":"4.2.0"}},"batch_id":"019ab7b2-4c1e-7d2a-9f3e-5a1b2c3d4e5f",
        "sdk":{"name":"tern-sdk-kotlin","version":"0.1.0"},"collector_id":"c-1"}"#;

/// [`GOOD_RECORD`], parsed.
pub fn good_record() -> tern_protocol::StreamRecord {
    serde_json::from_str(GOOD_RECORD).expect("GOOD_RECORD is a stream record v1")
}

/// A v1 record split into the v2 records a collector writes for it: the event record and its
/// upload's batch record (of one event).
pub fn v2_parts(
    r: &tern_protocol::StreamRecord,
) -> (tern_protocol::EventRecordV2, tern_protocol::BatchRecord) {
    r.to_v2(1)
}
