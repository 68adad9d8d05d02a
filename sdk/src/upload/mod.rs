//! One upload attempt: encode a stored batch (`encode`), POST it, and classify the answer; the
//! uploader thread that decides when to attempt which batch is the `scheduler`.

use std::time::{Duration, SystemTime};

use tern_protocol::{BatchAck, ErrorBody, RefusedEvent, BATCH_PATH};
use uuid::Uuid;

use crate::transport::{HttpRequest, Transport};

mod encode;
pub(crate) mod scheduler;

pub use encode::{encode_batch, sdk_info, EncodedBatch, ZSTD_LEVEL};

/// Most bytes of an answer the uploader reads: an acknowledgement or an error body is well under
/// 1 KiB; a captive portal's page need not be read whole.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The `error` of the collector's 409: the `batch_id` was seen before with other content.
pub const BATCH_ID_CONFLICT: &str = "batch_id_conflict";

/// What the collector's answer means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event is in the stream: delete the batch.
    Delivered,
    /// The batch was acknowledged, but these of its events were refused (partial accept):
    /// delete the others, quarantine these.
    PartlyRefused(Vec<RefusedEvent>),
    /// The collector already took another batch under this `batch_id` (409
    /// `batch_id_conflict`): send the same content again under a fresh one.
    Conflict(String),
    /// No answer came (DNS, connect, TLS failure, or a timeout before any response): the
    /// collector may be fine and the device offline. Try the same batch again later; the
    /// platform's "network is back" or the app's return to the foreground may try it at once.
    Unreachable(String),
    /// The server answered, but not with an acknowledgement: try the same batch again later,
    /// after the backoff (and its `Retry-After`), whatever the platform says. 5xx, 408, 429, a
    /// 4xx that is not the collector's refusal, a redirect, a 2xx without an acknowledgement of
    /// the batch.
    Retry {
        /// The collector's `Retry-After`, if it sent one.
        after: Option<Duration>,
        /// Why, for the record.
        reason: String,
    },
    /// The write key was refused (401/403): keep the data, pause.
    Unauthorized(String),
    /// The body is over the collector's limit (413): split the batch.
    TooLarge(String),
    /// The collector called the batch malformed (400 or 422 with its JSON error body): it will
    /// never be accepted.
    Rejected(String),
}

/// Sends one attempt through `transport`, which must not follow redirects (see
/// [`Transport`]), and classifies the answer.
pub fn send(
    transport: &dyn Transport,
    endpoint: &str,
    write_key: &str,
    batch: &EncodedBatch,
    timeout: Duration,
) -> Outcome {
    let request = HttpRequest {
        url: format!("{}{}", endpoint.trim_end_matches('/'), BATCH_PATH),
        headers: vec![
            ("Authorization".to_owned(), format!("Bearer {write_key}")),
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Content-Encoding".to_owned(), "zstd".to_owned()),
        ],
        body: &batch.body,
        timeout,
        // An answer of ours is small; a portal's page need not be read whole.
        max_response_bytes: MAX_ANSWER_BYTES,
    };
    let response = match transport.post(&request) {
        Ok(r) => r,
        Err(e) => {
            // The transport's contract: `Err` only when no HTTP answer came.
            // An app's client may hand over a whole stack trace; the record needs a line.
            return Outcome::Unreachable(format!("network: {}", truncate(&e, 300)));
        }
    };
    let status = response.status;
    let retry_after = response
        .retry_after
        .as_deref()
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let location = response
        .location
        .as_deref()
        .map(|v| truncate(v, 200).to_owned());
    // Also when a transport read more than it was asked to.
    let max = usize::try_from(MAX_ANSWER_BYTES).unwrap_or(usize::MAX);
    let body = &response.body[..response.body.len().min(max)];
    let text = String::from_utf8_lossy(body);
    match ((300..=399).contains(&status), location) {
        (true, Some(to)) => Outcome::Retry {
            after: retry_after,
            reason: format!(
                "HTTP {status}: redirected to {to}; uploads do not follow redirects (check the endpoint)"
            ),
        },
        _ => classify(status, retry_after, &text, batch.batch_id),
    }
}

/// A `Retry-After` value (RFC 9110): delay-seconds or an HTTP-date, as a delay from `now` (0
/// for a date in the past). Unbounded here: the uploader cuts it to
/// [`crate::Policy::max_retry_after`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// What an answer means for the batch `batch_id` that was sent.
fn classify(status: u16, after: Option<Duration>, body: &str, batch_id: Uuid) -> Outcome {
    let reason = format!("HTTP {status}: {}", truncate(body, 300));
    match status {
        // Delivered only when the collector acknowledges this very batch: a captive portal or
        // a proxy answering 200 with a page of its own must not delete data.
        200..=299 => match serde_json::from_str::<BatchAck>(body) {
            Ok(ack) if ack.batch_id == batch_id && ack.refused.is_empty() => Outcome::Delivered,
            Ok(ack) if ack.batch_id == batch_id => Outcome::PartlyRefused(ack.refused),
            Ok(ack) => Outcome::Retry {
                after,
                reason: format!(
                    "HTTP {status}: the answer acknowledges batch {}, not this one",
                    ack.batch_id
                ),
            },
            Err(_) => Outcome::Retry {
                after,
                reason: format!(
                    "HTTP {status} without the collector's acknowledgement (a captive portal or \
                     a proxy?): {}",
                    truncate(body, 200)
                ),
            },
        },
        // A redirect without a Location, or not followed: the endpoint is misconfigured.
        300..=399 => Outcome::Retry {
            after,
            reason: format!("HTTP {status}: uploads do not follow redirects (check the endpoint)"),
        },
        401 | 403 => Outcome::Unauthorized(reason),
        413 => Outcome::TooLarge(reason),
        409 if serde_json::from_str::<ErrorBody>(body)
            .is_ok_and(|e| e.error == BATCH_ID_CONFLICT) =>
        {
            Outcome::Conflict(reason)
        }
        // Only the collector's own refusal, with its error body, says the batch is malformed.
        400 | 422 if serde_json::from_str::<ErrorBody>(body).is_ok() => Outcome::Rejected(reason),
        // Any other 4xx (a wrong endpoint, a proxy, a captive portal) says nothing about the
        // batch: keep it and retry with backoff, rather than quarantine the whole buffer.
        // 408 timeout and 429 rate limit are the collector asking us to come back later.
        _ => Outcome::Retry { after, reason },
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERROR_BODY: &str = r#"{"error":"invalid_batch","message":"events[0]: missing seq"}"#;

    const BATCH: Uuid = Uuid::from_u128(0x019a_0000_0000_7000_8000_0000_0000_0001);

    fn c(status: u16, body: &str) -> Outcome {
        classify(status, None, body, BATCH)
    }

    fn ack(batch_id: Uuid) -> String {
        serde_json::to_string(&BatchAck {
            batch_id,
            accepted: 3,
            dead_lettered: 0,
            refused: Vec::new(),
            gaps: 0,
        })
        .unwrap()
    }

    /// What a transport was asked to send.
    struct Sent {
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Duration,
        max_response_bytes: u64,
    }

    /// A transport that records what it was asked to send and answers from a script.
    struct Scripted {
        answer: Result<crate::transport::HttpResponse, String>,
        sent: std::sync::Mutex<Vec<Sent>>,
    }

    impl Transport for Scripted {
        fn post(
            &self,
            r: &HttpRequest<'_>,
        ) -> std::result::Result<crate::transport::HttpResponse, String> {
            self.sent.lock().unwrap().push(Sent {
                url: r.url.clone(),
                headers: r.headers.clone(),
                body: r.body.to_vec(),
                timeout: r.timeout,
                max_response_bytes: r.max_response_bytes,
            });
            self.answer.clone()
        }
    }

    fn send_to(answer: Result<crate::transport::HttpResponse, String>) -> (Outcome, Scripted) {
        let transport = Scripted {
            answer,
            sent: Default::default(),
        };
        let batch = EncodedBatch {
            batch_id: BATCH,
            body: b"zstd bytes".to_vec(),
            raw_len: 42,
        };
        let outcome = send(
            &transport,
            "https://c.example/",
            "key",
            &batch,
            Duration::from_secs(7),
        );
        (outcome, transport)
    }

    fn answer(status: u16, body: &str) -> crate::transport::HttpResponse {
        crate::transport::HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_transport_is_asked_for_exactly_one_post_of_the_batch() {
        let (outcome, transport) = send_to(Ok(answer(200, &ack(BATCH))));
        assert_eq!(outcome, Outcome::Delivered);
        let sent = transport.sent.into_inner().unwrap();
        assert_eq!(sent.len(), 1);
        let Sent {
            url,
            headers,
            body,
            timeout,
            max_response_bytes,
        } = &sent[0];
        assert_eq!(url, "https://c.example/v1/batch");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("Authorization"), Some("Bearer key"));
        assert_eq!(header("Content-Type"), Some("application/json"));
        assert_eq!(header("Content-Encoding"), Some("zstd"));
        assert_eq!(headers.len(), 3);
        assert_eq!(body, b"zstd bytes");
        assert_eq!(*timeout, Duration::from_secs(7));
        assert_eq!(*max_response_bytes, MAX_ANSWER_BYTES);
    }

    #[test]
    fn a_transports_answers_are_classified_like_any_other() {
        let (outcome, _) = send_to(Err("connection refused\nat a stack trace".into()));
        assert!(
            matches!(outcome, Outcome::Unreachable(ref reason) if reason.starts_with("network: connection refused")),
            "{outcome:?}"
        );
        let (outcome, _) = send_to(Ok(crate::transport::HttpResponse {
            status: 307,
            location: Some("https://elsewhere.example/".into()),
            retry_after: Some("120".into()),
            body: Vec::new(),
        }));
        assert!(
            matches!(&outcome, Outcome::Retry { after: Some(a), reason } if *a == Duration::from_secs(120) && reason.contains("https://elsewhere.example/")),
            "{outcome:?}"
        );
        // A body longer than asked for is cut before it is read: the ack past the cut is lost.
        let padded = format!(
            "{}{}",
            " ".repeat(usize::try_from(MAX_ANSWER_BYTES).unwrap()),
            ack(BATCH)
        );
        let (outcome, _) = send_to(Ok(answer(200, &padded)));
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(c(200, &ack(BATCH)), Outcome::Delivered);
        assert!(matches!(c(401, ""), Outcome::Unauthorized(_)));
        assert!(matches!(c(403, ""), Outcome::Unauthorized(_)));
        assert!(matches!(c(413, ""), Outcome::TooLarge(_)));
        assert!(matches!(c(400, ERROR_BODY), Outcome::Rejected(r) if r.contains("missing seq")));
        assert!(matches!(c(422, ERROR_BODY), Outcome::Rejected(_)));
        for status in [408, 429, 500, 503] {
            assert!(
                matches!(c(status, ERROR_BODY), Outcome::Retry { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn an_ack_with_refused_events_is_a_partial_accept_and_409_conflict_a_fresh_id() {
        let refused = RefusedEvent {
            event_id: Uuid::from_u128(5),
            seq: 5,
            reason: "invalid_name".into(),
            message: "event name is empty".into(),
        };
        let partial = serde_json::to_string(&BatchAck {
            batch_id: BATCH,
            accepted: 9,
            dead_lettered: 0,
            refused: vec![refused.clone()],
            gaps: 0,
        })
        .unwrap();
        assert_eq!(c(200, &partial), Outcome::PartlyRefused(vec![refused]));
        let conflict = r#"{"error":"batch_id_conflict","message":"seen with other events"}"#;
        assert!(matches!(c(409, conflict), Outcome::Conflict(_)));
        // Any other 409 says nothing about the batch: retried as it is.
        assert!(matches!(c(409, ERROR_BODY), Outcome::Retry { .. }));
        assert!(matches!(c(409, ""), Outcome::Retry { .. }));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            p("Wed, 21 Oct 2026 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        // The obsolete forms RFC 9110 still asks recipients to accept.
        assert_eq!(
            p("Wednesday, 21-Oct-26 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p("Wed Oct 21 07:28:30 2026"), Some(Duration::from_secs(30)));
        assert_eq!(
            p("Tue, 20 Oct 2026 07:28:00 GMT"),
            Some(Duration::ZERO),
            "past"
        );
        assert_eq!(p("soon"), None);
        assert_eq!(p("-5"), None);
    }

    #[test]
    fn only_an_acknowledgement_of_this_batch_counts_as_delivered() {
        for body in ["", "{}", "<html>Welcome to the airport Wi-Fi</html>", "[]"] {
            assert!(matches!(c(200, body), Outcome::Retry { .. }), "{body}");
        }
        assert!(matches!(c(204, ""), Outcome::Retry { .. }));
        let other = ack(Uuid::from_u128(7));
        assert!(
            matches!(c(200, &other), Outcome::Retry { reason, .. } if reason.contains("not this one"))
        );
        for status in [301, 302, 303, 307, 308] {
            assert!(matches!(c(status, ""), Outcome::Retry { .. }), "{status}");
        }
    }

    #[test]
    fn only_the_collectors_own_refusal_quarantines_a_batch() {
        // A wrong endpoint, a proxy or a captive portal must not move the buffer to quarantine.
        for status in [404, 405, 407, 410, 415, 418, 451] {
            assert!(
                matches!(c(status, ERROR_BODY), Outcome::Retry { .. }),
                "{status}"
            );
        }
        for body in ["", "<html>Bad Request</html>", "{}", r#"{"error":"x"}"#] {
            assert!(matches!(c(400, body), Outcome::Retry { .. }), "{body}");
            assert!(matches!(c(422, body), Outcome::Retry { .. }), "{body}");
        }
    }

    #[test]
    fn no_answer_is_a_connectivity_failure_and_any_answer_a_servers() {
        for failure in [
            "dns error: failed to lookup address information",
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
            "invalid peer certificate: UnknownIssuer",
            "operation timed out",
        ] {
            let (outcome, _) = send_to(Err(failure.into()));
            assert!(
                matches!(outcome, Outcome::Unreachable(_)),
                "{failure}: {outcome:?}"
            );
        }
        // A gateway answering for a collector it cannot reach is still an answer: the server
        // side is what fails, and its backoff (and Retry-After) holds.
        for status in [429, 500, 502, 503, 504] {
            let (outcome, _) = send_to(Ok(crate::transport::HttpResponse {
                status,
                retry_after: Some("30".into()),
                ..Default::default()
            }));
            assert!(
                matches!(outcome, Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(30)),
                "{status}: {outcome:?}"
            );
        }
    }
}
