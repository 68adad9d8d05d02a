//! Tern collector: receives SDK batches, validates and enriches every event, writes one Kinesis
//! record per event and acknowledges an upload only when every record has a sequence number.
//!
//! Flow: [`server`] (auth, body limits) → [`decode`] (decompress, parse, validate) → [`enrich`]
//! (stream records, dead letters) → [`sink::kinesis`] (PutRecords, retry only what failed).

pub mod config;
pub mod connections;
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

pub use config::{Cli, Config};
pub use error::{Error, Result};

use crate::metrics::Metrics;
use crate::server::AppState;
use crate::sink::kinesis::{KinesisSink, KinesisSinkConfig};

/// Runs the collector until `shutdown` completes; then it reports unready, waits
/// `shutdown_delay_ms` for the load balancer to notice, stops accepting connections, gives
/// in-flight uploads up to `shutdown_deadline_ms` to finish, and returns. An upload cut off by the
/// deadline was not acknowledged, so its SDK resends it: nothing acknowledged is lost. The final
/// event counts are logged (`final event accounting`) once every handler has ended.
/// Calls `on_listening` with the bound address once the listener is up.
pub async fn run(
    config: Config,
    on_listening: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let sink_config = KinesisSinkConfig {
        stream: config.stream.clone(),
        dead_letter_stream: config.dead_letter_stream.clone(),
        endpoint: config.kinesis_endpoint.clone(),
        region: config.region.clone(),
    };
    let client = sink_config.client().await;
    let collector_id = config.instance_id.clone().unwrap_or_else(|| {
        let id = Uuid::now_v7().simple().to_string();
        format!("tern-{}", &id[id.len() - 12..])
    });
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, stream = %config.stream, %collector_id, "listening");
    let shutdown_delay = std::time::Duration::from_millis(config.shutdown_delay_ms);
    let shutdown_deadline = config.shutdown_deadline();
    let state = Arc::new(AppState::new(
        config,
        KinesisSink::new(client, Arc::clone(&metrics)),
        Arc::clone(&metrics),
        collector_id,
    ));
    readiness::check_once(&state).await;
    tokio::spawn(readiness::watch(Arc::clone(&state)));
    on_listening(addr);

    let header_read_timeout = state.config().header_read_timeout();
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
