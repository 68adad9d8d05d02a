//! Readiness: the collector is ready when Kinesis answers for its stream and, if configured,
//! its dead-letter stream (an upload with one invalid event needs both), and it is not
//! draining. Kinesis is asked every [`READINESS_INTERVAL`]; the answer flips only after
//! [`READINESS_FLIP_AFTER`] consecutive checks agree, so one slow call does not take an
//! instance out of the pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::limits::{READINESS_FLIP_AFTER, READINESS_INTERVAL};
use crate::server::AppState;
use crate::sink::kinesis::limits::PUT_RECORDS_ATTEMPT_TIMEOUT;

/// Asks Kinesis once whether the stream and the dead-letter stream (if any) answer.
async fn kinesis_answers(state: &AppState) -> bool {
    let kinesis = &state.config().kinesis;
    let streams = std::iter::once(&kinesis.stream).chain(&kinesis.dead_letter_stream);
    let checks = streams.map(|stream| async move {
        let call = state
            .sink()
            .client()
            .describe_stream_summary()
            .stream_name(stream)
            .send();
        let answered = matches!(
            tokio::time::timeout(PUT_RECORDS_ATTEMPT_TIMEOUT, call).await,
            Ok(Ok(_))
        );
        if !answered {
            tracing::debug!(%stream, "Kinesis does not answer for the stream");
        }
        answered
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .all(|answered| answered)
}

/// The first check, at start: no hysteresis, so a healthy instance is ready at once.
pub async fn check_once(state: &AppState) {
    let ok = kinesis_answers(state).await;
    if !ok {
        tracing::warn!("Kinesis does not answer at start; unready until it does");
    }
    state.kinesis_ok.store(ok, Ordering::SeqCst);
    state.publish_readiness();
}

/// Checks forever, flipping readiness after consecutive agreeing answers.
pub async fn watch(state: Arc<AppState>) {
    let mut streak = 0u32;
    loop {
        tokio::time::sleep(READINESS_INTERVAL).await;
        let ok = kinesis_answers(&state).await;
        if ok == state.kinesis_ok.load(Ordering::SeqCst) {
            streak = 0;
        } else {
            streak += 1;
            if streak >= READINESS_FLIP_AFTER {
                tracing::warn!(kinesis_answers = ok, "readiness changes");
                state.kinesis_ok.store(ok, Ordering::SeqCst);
                streak = 0;
            }
        }
        state.publish_readiness();
    }
}
