//! With `telemetry.otlp_endpoint` set, spans reach an OTLP/HTTP collector (a tiny recording
//! server here) carrying the service name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use flywheel_runtime::TelemetryConfig;

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_over_otlp_http() -> anyhow::Result<()> {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let collector = Router::new().route(
        "/v1/traces",
        post({
            let received = received.clone();
            move |body: Bytes| async move {
                received.lock().expect("lock").push(body.to_vec());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}/v1/traces", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let config = TelemetryConfig {
        otlp_endpoint: Some(endpoint),
        ..TelemetryConfig::default()
    };
    let guard = flywheel_runtime::telemetry::init(&config, "otlp-probe")?;
    {
        let span = tracing::info_span!("train_model", model = "churn");
        let _entered = span.enter();
        tracing::info!("inside a span");
    }
    guard.shutdown().await;

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.lock().expect("lock").is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies = received.lock().expect("lock").clone();
    assert!(!bodies.is_empty(), "no export reached the collector");
    let all: Vec<u8> = bodies.concat();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"flywheel-otlp-probe"),
        "service name missing from the export"
    );
    assert!(
        contains(b"train_model"),
        "span name missing from the export"
    );
    Ok(())
}
