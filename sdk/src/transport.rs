//! The one HTTP request of an upload attempt, behind a small trait.
//!
//! Everything that decides what a batch's fate is (encoding, status classification, the
//! `Retry-After` and `BatchAck` checks, backoff, split, quarantine) stays in [`crate::upload`]
//! and the tracker; a [`Transport`] only carries bytes. The mobile library has no HTTP stack of
//! its own: Kotlin, Swift and Python pass one built on the platform's (HttpURLConnection,
//! URLSession, urllib), so the system's proxies, trust store, Android's network security config
//! and iOS's App Transport Security apply, and the library is smaller by the whole of
//! reqwest, hyper, tokio, rustls and their root certificates. Rust callers (the tools and the
//! tests) get [`ReqwestTransport`] with the `http-reqwest` feature, on by default.

use std::time::Duration;

/// One POST of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The full URL, e.g. `https://collector.example.com/v1/batch`.
    pub url: String,
    /// Headers to send, exactly these (the transport adds only `Content-Length` and what its
    /// HTTP stack must: `Host`, `Connection`, ...).
    pub headers: Vec<(String, String)>,
    /// The body, sent as is (zstd-compressed JSON).
    pub body: &'a [u8],
    /// The longest the whole request may take, connection included.
    pub timeout: Duration,
    /// Most bytes of the answer's body worth reading; the rest may be left unread.
    pub max_response_bytes: u64,
}

/// Whatever HTTP answer came back, whatever its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The raw `Retry-After` header, if any; parsed by the SDK.
    pub retry_after: Option<String>,
    /// The raw `Location` header, if any; only reported (redirects are not followed).
    pub location: Option<String>,
    /// The body, or its first `max_response_bytes` bytes.
    pub body: Vec<u8>,
}

/// Performs the HTTP request of one upload attempt.
///
/// The contract, which decides whether events can be lost or duplicated:
/// - POST exactly `request.headers` and `request.body` to `request.url`;
/// - **do not follow redirects**: a followed 301/302 turns the POST into a GET, whose 200 from
///   somewhere else would delete the batch; return the 3xx as a response;
/// - honour `request.timeout` (an upload that hangs holds up every later batch);
/// - return every HTTP answer as `Ok`, 4xx and 5xx included, with its `Retry-After` and body;
/// - return `Err` (a reason, for the log) only when no HTTP answer came: a DNS, connection, TLS
///   or timeout failure. The SDK keeps the batch and retries it with backoff.
///
/// Called on the SDK's uploader thread, never the app's main thread; one request at a time.
pub trait Transport: Send + Sync {
    /// Sends `request` and returns the answer, or why there was none.
    fn post(&self, request: &HttpRequest<'_>) -> Result<HttpResponse, String>;
}

/// The default transport when the `http-reqwest` feature is on; `None` without it.
pub(crate) fn default_transport() -> Option<std::sync::Arc<dyn Transport>> {
    #[cfg(feature = "http-reqwest")]
    {
        Some(std::sync::Arc::new(ReqwestTransport::default()))
    }
    #[cfg(not(feature = "http-reqwest"))]
    {
        None
    }
}

#[cfg(feature = "http-reqwest")]
pub use reqwest_transport::ReqwestTransport;

#[cfg(feature = "http-reqwest")]
mod reqwest_transport {
    use std::io::Read;
    use std::sync::OnceLock;

    use reqwest::blocking::Client;
    use reqwest::header::{LOCATION, RETRY_AFTER};

    use super::{HttpRequest, HttpResponse, Transport};

    /// A [`Transport`] over reqwest's blocking client with rustls and the web PKI roots, for
    /// Rust callers (feature `http-reqwest`).
    #[derive(Debug, Default)]
    pub struct ReqwestTransport {
        /// Built at the first request, on the uploader thread: a blocking reqwest client runs a
        /// runtime of its own, which must not be created (or dropped) on a thread of the
        /// caller's async runtime.
        client: OnceLock<Result<Client, String>>,
    }

    impl ReqwestTransport {
        fn client(&self) -> Result<&Client, String> {
            self.client
                .get_or_init(|| {
                    Client::builder()
                        // Following one would turn the POST into a GET (see `Transport`).
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .map_err(|e| format!("cannot build the HTTP client: {e}"))
                })
                .as_ref()
                .map_err(Clone::clone)
        }
    }

    impl Transport for ReqwestTransport {
        fn post(&self, request: &HttpRequest<'_>) -> Result<HttpResponse, String> {
            let mut builder = self
                .client()?
                .post(&request.url)
                .timeout(request.timeout)
                .body(request.body.to_vec());
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let response = builder.send().map_err(|e| e.to_string())?;
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let status = response.status().as_u16();
            let retry_after = header(RETRY_AFTER);
            let location = header(LOCATION);
            let mut body = Vec::new();
            // A body cut short (a reset, a timeout) is still the answer: its status counts.
            let _ = response
                .take(request.max_response_bytes)
                .read_to_end(&mut body);
            Ok(HttpResponse {
                status,
                retry_after,
                location,
                body,
            })
        }
    }
}
