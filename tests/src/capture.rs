//! A minimal HTTP server that records the requests it gets and answers each with a status the
//! test chooses: lets tests see exactly what the SDK puts on the wire, attempt after attempt.
//!
//! Unless a test gives a body, answers look like the collector's: a 2xx carries the
//! `BatchAck` of the batch received, anything else an `ErrorBody`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Request line, e.g. `POST /v1/batch HTTP/1.1`.
    pub request_line: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (still compressed).
    pub body: Vec<u8>,
}

impl Captured {
    /// The body decompressed (zstd) and parsed, if it is a JSON batch.
    pub fn batch(&self) -> Option<serde_json::Value> {
        let json = zstd::stream::decode_all(self.body.as_slice()).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decides the answer to a request: status and extra header lines (each ending in `\r\n`).
pub type Responder = dyn Fn(&Captured) -> (u16, String) + Send + Sync;

/// A full answer: status, extra header lines (each ending in `\r\n`) and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra header lines.
    pub headers: String,
    /// The body; `None` for the collector's: a `BatchAck` on 2xx, an `ErrorBody` otherwise.
    pub body: Option<String>,
}

/// Decides the full answer to a request.
pub type ReplyFn = dyn Fn(&Captured) -> Reply + Send + Sync;

/// The body the collector would send with `status` for `request`.
fn collector_body(status: u16, request: &Captured) -> String {
    if (200..300).contains(&status) {
        match request.batch() {
            Some(batch) => serde_json::json!({
                "batch_id": batch["batch_id"],
                "accepted": batch["events"].as_array().map_or(0, Vec::len),
                "dead_lettered": 0,
            })
            .to_string(),
            None => "{}".to_owned(),
        }
    } else {
        serde_json::json!({
            "error": "captured",
            "message": format!("the capture server answered {status}"),
        })
        .to_string()
    }
}

/// The capture server; runs until the process ends (tests are short-lived).
pub struct CaptureServer {
    /// Its address.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl CaptureServer {
    /// Starts a server answering every request with `status` and `extra_headers`.
    pub fn start(status: u16, extra_headers: &'static str) -> std::io::Result<Self> {
        Self::start_with(Box::new(move |_| (status, extra_headers.to_owned())))
    }

    /// Starts a server whose answers' status and headers `respond` decides (collector bodies).
    pub fn start_with(respond: Box<Responder>) -> std::io::Result<Self> {
        Self::start_replying(Box::new(move |request| {
            let (status, headers) = respond(request);
            Reply {
                status,
                headers,
                body: None,
            }
        }))
    }

    /// Starts a server whose whole answers `respond` decides.
    pub fn start_replying(respond: Box<ReplyFn>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => continue,
                });
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = line.split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0usize);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let captured = Captured {
                    request_line: request_line.trim().to_owned(),
                    headers,
                    body,
                };
                let reply = respond(&captured);
                let body = reply
                    .body
                    .unwrap_or_else(|| collector_body(reply.status, &captured));
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(captured);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} Captured\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n{}\r\n{body}",
                    reply.status,
                    body.len(),
                    reply.headers
                );
            }
        });
        Ok(Self { addr, requests })
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
