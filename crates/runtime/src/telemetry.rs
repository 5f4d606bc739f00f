//! Logs (pretty or JSON), OpenTelemetry traces (OTLP/HTTP when an endpoint is set) and the W3C
//! propagator. Spans always carry trace ids, so `traceparent` flows between services even when
//! nothing is exported.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::ServiceError;

/// Logging and tracing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `pretty` for people, `json` for log collectors.
    pub log_format: String,
    /// Filter directives, e.g. `info` or `info,flywheel_bus=debug` (`RUST_LOG` wins when set).
    pub log_level: String,
    /// OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "pretty".into(),
            log_level: "info".into(),
            otlp_endpoint: None,
        }
    }
}

impl TelemetryConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.log_format.as_str(), "pretty" | "json") {
            return Err(format!(
                "telemetry.log_format: expected `pretty` or `json`, got `{}`",
                self.log_format
            ));
        }
        EnvFilter::try_new(&self.log_level).map_err(|e| {
            format!("telemetry.log_level: expected filter directives such as `info`: {e}")
        })?;
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "telemetry.otlp_endpoint: expected http(s)://host:port/v1/traces, got `{endpoint}`"
            ));
        }
        Ok(())
    }
}

/// Flushes and stops trace export when the service ends.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes pending spans; blocking, so call it after the server stopped.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global subscriber and propagator. A second call (tests, `flywheel up`) keeps the
/// first subscriber and returns an inert guard.
pub fn init(config: &TelemetryConfig, service: &str) -> Result<TelemetryGuard, ServiceError> {
    config.validate().map_err(ServiceError::Config)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(format!("flywheel-{service}"))
            .build(),
    );
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| ServiceError::Telemetry(format!("OTLP exporter for {endpoint}: {e}")))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer(format!("flywheel-{service}"));
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let fmt = match config.log_format.as_str() {
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
        _ => tracing_subscriber::fmt::layer().with_target(true).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .is_ok();
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(TelemetryGuard {
            provider: Some(provider),
        })
    } else {
        Ok(TelemetryGuard { provider: None })
    }
}
