//! Tern collector: receives SDK batches, validates and enriches every event, writes one Kinesis
//! record per event and acknowledges an upload only when every record has a sequence number.
//!
//! Flow: [`server`] (auth, body limits) → [`decode`] (decompress, parse, validate) → [`enrich`]
//! (stream records, dead letters made to fit by [`dead_letter`]) → [`sink::kinesis`]
//! (PutRecords, retry only what failed). Settings: [`config`] (sections), read by [`cli`].

pub mod cli;
pub mod config;
pub mod connections;
pub mod dead_letter;
pub mod decode;
pub mod enrich;
pub mod error;
pub mod in_flight;
pub mod limits;
pub mod metrics;
pub mod readiness;
pub mod server;
pub mod sink;

use std::sync::Arc;

use tokio::net::TcpListener;
use uuid::Uuid;

pub use cli::Cli;
pub use config::Config;
pub use error::{Error, Result};

use crate::metrics::Metrics;
use crate::server::AppState;
use crate::sink::kinesis::KinesisSink;

/// Runs the collector until `shutdown` completes; then it reports unready, waits
/// `server.shutdown_delay_ms` for the load balancer to notice, stops accepting connections, gives
/// in-flight uploads up to `server.shutdown_deadline_ms` to finish, and returns. An upload cut off by the
/// deadline was not acknowledged, so its SDK resends it: nothing acknowledged is lost. The final
/// event counts are logged (`final event accounting`) once every handler has ended.
/// Calls `on_listening` with the bound address once the listener is up.
pub async fn run(
    config: Config,
    on_listening: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let client = config.kinesis.client().await;
    let collector_id = config.server.instance_id.clone().unwrap_or_else(|| {
        let id = Uuid::now_v7().simple().to_string();
        format!("tern-{}", &id[id.len() - 12..])
    });
    let listener = TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, stream = %config.kinesis.stream, %collector_id, "listening");
    let shutdown_delay = config.server.shutdown_delay();
    let shutdown_deadline = config.server.shutdown_deadline();
    let state = Arc::new(AppState::new(
        config,
        KinesisSink::new(client, Arc::clone(&metrics)),
        Arc::clone(&metrics),
        collector_id,
    ));
    readiness::check_once(&state).await;
    tokio::spawn(readiness::watch(Arc::clone(&state)));
    on_listening(addr);

    let header_read_timeout = state.config().server.header_read_timeout();
    let stop_accepting = {
        let state = Arc::clone(&state);
        async move {
            shutdown.await;
            state
                .draining
                .store(true, std::sync::atomic::Ordering::SeqCst);
            state.publish_readiness();
            tracing::info!(
                ?shutdown_delay,
                "draining: unready, then finishing in-flight uploads"
            );
            tokio::time::sleep(shutdown_delay).await;
        }
    };
    connections::serve(
        listener,
        server::router(Arc::clone(&state)),
        header_read_timeout,
        stop_accepting,
        shutdown_deadline,
    )
    .await;
    // Every handler is gone (cancelled ones settled as `cancelled`): the counts are final, and
    // a process about to exit cannot be scraped any more, so they go to the log.
    let a = metrics.accounting();
    if a.balanced() {
        tracing::info!(
            received = a.received,
            delivered = a.delivered,
            dead_lettered = a.dead_lettered,
            refused = a.refused,
            duplicate = a.duplicate,
            rejected = a.rejected,
            "final event accounting"
        );
    } else {
        tracing::error!(
            received = a.received,
            delivered = a.delivered,
            dead_lettered = a.dead_lettered,
            refused = a.refused,
            duplicate = a.duplicate,
            rejected = a.rejected,
            "final event accounting does not balance"
        );
    }
    Ok(())
}
