//! `GET /metrics`: this application's metrics for Prometheus, in the
//! Prometheus text format (0.0.4), or in OpenMetrics when the scraper's
//! `Accept` asks for it (as Prometheus itself does).

use axum::{extract::State, response::IntoResponse};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prometheus_client::encoding::prometheus_text;

use crate::telemetry::metrics::Metrics;

/// Where Prometheus scrapes (its default `metrics_path`).
pub const METRICS_PATH: &str = "/metrics";

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn get(State(metrics): State<Metrics>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    // Off the async workers: a scrape reads /proc (the fd count grows with
    // the connections).
    let encoded = tokio::task::spawn_blocking(move || {
        if openmetrics {
            (OPENMETRICS, metrics.encode_openmetrics())
        } else {
            (prometheus_text::CONTENT_TYPE, metrics.encode_prometheus())
        }
    })
    .await;
    match encoded {
        Ok((content_type, Ok(body))) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response(),
        // Writing to a String does not fail; never a half-written scrape.
        Ok((_, Err(e))) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "the metrics encoder failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
