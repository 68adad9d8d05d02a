//! The collector's errors, and how each one is answered over HTTP.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tern_protocol::ErrorBody;

use crate::limits::RETRY_AFTER_STREAM_UNAVAILABLE;

/// Errors of the collector library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An I/O error (binding the listener, say).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with the collector's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an upload was not acknowledged: each variant is one HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No `Authorization: Bearer` header, or an unknown key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The body, compressed or not, is over a limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A `Content-Encoding` we do not speak.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// The batch cannot be read or breaks the wire format (`code` names which rule).
    #[error("{message}")]
    Malformed {
        /// Machine-readable reason, e.g. `malformed_json`.
        code: &'static str,
        /// For a human.
        message: String,
    },
    /// A batch with this `batch_id` was acknowledged with other events or gaps: the SDK gives
    /// the batch a fresh `batch_id` and resends it.
    #[error("{0}")]
    BatchIdConflict(String),
    /// The client was too slow sending its body.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The write key sent more events per second than its limit.
    #[error("the write key is over its rate limit; retry after the indicated delay")]
    RateLimited {
        /// When to come back.
        retry_after: Duration,
    },
    /// The collector holds as many uploads as its memory bound allows: come back shortly.
    #[error("the collector is at its in-flight bound; retry after the indicated delay")]
    Overloaded {
        /// When to come back.
        retry_after: Duration,
    },
    /// Kinesis did not take every record before the deadline: resend the same batch later.
    #[error("{message}")]
    StreamUnavailable {
        /// What happened.
        message: String,
        /// When to come back.
        retry_after: Duration,
    },
}

impl RequestError {
    /// A record that could not be serialized: answered 503 rather than writing an empty record
    /// (Kinesis accepts zero-length data, so the event would be lost without a trace).
    pub fn unserializable(e: serde_json::Error) -> Self {
        Self::StreamUnavailable {
            message: format!("internal error: a record could not be serialized: {e}"),
            retry_after: RETRY_AFTER_STREAM_UNAVAILABLE,
        }
    }

    /// The HTTP status of this answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::BatchIdConflict(_) => StatusCode::CONFLICT,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::StreamUnavailable { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Machine-readable reason, also the `reason` label of the rejection metrics; one of
    /// [`REQUEST_ERROR_CODES`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::Malformed { code, .. } => code,
            Self::BatchIdConflict(_) => "batch_id_conflict",
            Self::Timeout => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::StreamUnavailable { .. } => "stream_unavailable",
            Self::Overloaded { .. } => "overloaded",
        }
    }
}

/// Every [`RequestError::code`]: the `error` of an answer, and the `reason` label of
/// `requests_refused_total` (any other code would be labelled `other`, so the set stays fixed).
pub const REQUEST_ERROR_CODES: [&str; 13] = [
    "unauthorized",
    "payload_too_large",
    "unsupported_encoding",
    "malformed_encoding",
    "malformed_json",
    "json_too_deep",
    "invalid_batch",
    "batch_id_conflict",
    "body_read_failed",
    "timeout",
    "rate_limited",
    "stream_unavailable",
    "overloaded",
];

/// `Retry-After` in whole seconds, rounded up and at least 1: a client that comes back at the
/// advertised time must not be early (it would be refused again), and 0 would mean "now".
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    let whole = retry_after.as_secs();
    let seconds = if retry_after.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    seconds.max(1)
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::StreamUnavailable { retry_after, .. }
        | Self::Overloaded { retry_after }
        | Self::RateLimited { retry_after } = &self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(*retry_after)),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each answer's code is one of the fixed label values (a code missing from the list would
    /// be counted as `other`).
    #[test]
    fn every_code_is_a_known_label_value() {
        let retry_after = Duration::from_secs(1);
        let errors = [
            RequestError::Unauthorized(""),
            RequestError::PayloadTooLarge(String::new()),
            RequestError::UnsupportedEncoding(String::new()),
            RequestError::BatchIdConflict(String::new()),
            RequestError::Timeout,
            RequestError::RateLimited { retry_after },
            RequestError::Overloaded { retry_after },
            RequestError::StreamUnavailable {
                message: String::new(),
                retry_after,
            },
        ];
        for e in errors {
            assert!(REQUEST_ERROR_CODES.contains(&e.code()), "{}", e.code());
        }
        // The codes of malformed bodies are chosen where the body is read and checked.
        let sources = [
            include_str!("decode.rs"),
            include_str!("enrich.rs"),
            include_str!("server.rs"),
        ];
        let mut found = 0;
        for source in sources {
            for code in source.split("code: \"").skip(1) {
                let code = code.split('"').next().unwrap_or_default();
                assert!(
                    REQUEST_ERROR_CODES.contains(&code),
                    "{code} is missing from REQUEST_ERROR_CODES"
                );
                found += 1;
            }
        }
        assert!(found >= 5, "{found} malformed codes found");
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2_500)), 3);
        assert_eq!(retry_after_seconds(Duration::from_secs(5)), 5);
        let response = RequestError::RateLimited {
            retry_after: Duration::from_millis(1_200),
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
