//! A minimal HTTP server that records the requests it gets and answers each with a fixed
//! status: lets tests see exactly what the SDK puts on the wire, attempt after attempt.

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

    /// Starts a server whose answers `respond` decides.
    pub fn start_with(respond: Box<Responder>) -> std::io::Result<Self> {
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
                let (status, extra_headers) = respond(&captured);
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(captured);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Captured\r\ncontent-length: 2\r\ncontent-type: application/json\r\nconnection: close\r\n{extra_headers}\r\n{{}}"
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
