//! W3C trace context crosses the bus: the consumer's span continues the publisher's trace.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind, run_consumer};
use flywheel_testkit::{cleanup_bus, test_bus};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use super::queued;

// One thread, so the thread-local subscriber sees the consumer's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn trace_context_travels_in_headers() -> anyhow::Result<()> {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let bus = test_bus("trace").await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |_delivery: Delivery| {
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        let _ = tx.send(trace_id);
        async { Outcome::Ack }
    };
    let spec = ConsumerSpec::new(
        StreamKind::Events,
        "trace",
        format!("{}.events.>", bus.subjects().prefix()),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_consumer(bus.clone(), spec, handler, shutdown.clone()));

    let span = tracing::info_span!("request");
    let published_trace = span.context().span().span_context().trace_id();
    bus.publish(&queued("traced")).instrument(span).await?;

    let consumed_trace = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await?
        .expect("delivery");
    assert_ne!(published_trace, opentelemetry::trace::TraceId::INVALID);
    assert_eq!(
        consumed_trace, published_trace,
        "the consumer continues the publisher's trace"
    );

    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let last = stream.info().await?.state.last_sequence;
    let raw = stream.get_raw_message(last).await?;
    let traceparent = raw
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(
        traceparent.contains(&published_trace.to_string()),
        "traceparent header: {traceparent:?}"
    );

    shutdown.cancel();
    task.await??;
    cleanup_bus(&bus).await;
    Ok(())
}
