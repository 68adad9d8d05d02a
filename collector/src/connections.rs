//! Accepting and serving HTTP/1.1 connections, with the limits `axum::serve` does not offer: a
//! deadline for the request line and headers (a slow-loris client is cut off), a bound on open
//! connections and on each one's read buffer, and a drain that ends by dropping whatever is
//! still running before it returns, so that every cancelled upload has settled its accounting
//! when the process reports its final counts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::limits::{MAX_CONNECTIONS, MAX_CONNECTION_BUFFER_BYTES};

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop_accepting` completes; then closes the listener,
/// lets requests in progress finish for up to `drain_deadline`, and drops what is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop_accepting: impl Future<Output = ()>,
    drain_deadline: Duration,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_CONNECTION_BUFFER_BYTES);
    tokio::pin!(stop_accepting);
    loop {
        let permit = tokio::select! {
            () = &mut stop_accepting => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        let stream = tokio::select! {
            () = &mut stop_accepting => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Answers are written in one go; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
        // Reap finished connections so the set does not grow with the server's lifetime.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Idle connections close at once; requests in progress finish (each within its ack
    // deadline, which the configuration keeps below the drain deadline).
    if tokio::time::timeout(drain_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain_deadline,
            "drain deadline passed; unanswered uploads will be resent by their SDKs"
        );
    }
    // Dropping what is left cancels its uploads, which settle their accounting as they drop.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
