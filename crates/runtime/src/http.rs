//! HTTP scaffolding: the one error format, health and metrics routes, request ids, limits,
//! and a mount point so `/healthz` answers while the service is still connecting.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::readiness::Readiness;
use crate::settings::HttpConfig;

/// The small closed set of error kinds every API speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or invalid (400).
    BadRequest,
    /// Authentication is missing or wrong (401).
    Unauthorized,
    /// Not allowed (403).
    Forbidden,
    /// No such resource (404).
    NotFound,
    /// The state forbids it, e.g. a duplicate (409).
    Conflict,
    /// The request took too long (408).
    Timeout,
    /// The body is too large (413).
    PayloadTooLarge,
    /// The media type is not accepted (415).
    UnsupportedMediaType,
    /// Well-formed but semantically wrong (422).
    Unprocessable,
    /// A dependency is down or the service is starting (503).
    Unavailable,
    /// A bug or unexpected failure (500; details only in the server log).
    Internal,
}

impl ErrorCode {
    /// The HTTP status for the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error rendered as `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The kind.
    pub code: ErrorCode,
    /// A message for the caller (opaque for 5xx).
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// 500: logs the detail, tells the caller nothing internal.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
    /// The message again under the Open Inference Protocol's key, so errors the kit itself
    /// answers (body too large, timeouts, unknown routes) read the same to V2 clients.
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.code.status(),
            Json(ErrorBody {
                code: self.code,
                message: &self.message,
                error: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        let code = match &rejection {
            R::MissingJsonContentType(_) => ErrorCode::UnsupportedMediaType,
            R::JsonDataError(_) => ErrorCode::Unprocessable,
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::BadRequest,
        };
        Self::new(code, rejection.body_text())
    }
}

/// A JSON body extractor whose rejections use the API error format.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Json::<T>::from_request(req, state).await?.0))
    }
}

/// Where a service's own routes are mounted once it has started; until then they answer 503.
#[derive(Debug, Clone, Default)]
pub struct Mount(Arc<OnceLock<Router>>);

impl Mount {
    /// Mounts the service's routes (once; later calls are ignored).
    pub fn set(&self, routes: Router) {
        let routes = routes
            .fallback(not_found)
            .layer(axum::middleware::from_fn(remember_route));
        let _ = self.0.set(routes);
    }
}

/// The route template that answered, carried out of a mounted router for metrics.
#[derive(Debug, Clone)]
struct RouteLabel(String);

async fn remember_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn dispatch(State(mount): State<Mount>, request: Request) -> Response {
    match mount.0.get() {
        Some(router) => match router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => ApiError::unavailable("service is starting").into_response(),
    }
}

/// Layers (body limit, timeout) answer in plain text; give every error the one JSON format.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "request body too large"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "request timed out"),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::BadRequest, "method not allowed"),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error; see the server log"),
        _ => (ErrorCode::BadRequest, "bad request"),
    };
    let mut replaced = ApiError::new(code, message).into_response();
    *replaced.status_mut() = status;
    replaced
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "alive"}))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.check().await;
    let status = if report.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
}

async fn track(service: &'static str, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let outer_route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|label| label.0.clone())
        .or(outer_route)
        .unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16().to_string();
    let labels = [
        ("service", service.to_owned()),
        ("method", method),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("flywheel_http_requests_total", &labels).increment(1);
    metrics::histogram!("flywheel_http_request_duration_seconds", &labels[..3])
        .record(started.elapsed().as_secs_f64());
    response
}

/// The full application router: health, readiness, metrics, and the mounted service routes,
/// behind request ids, tracing, a body limit and a timeout.
pub fn app(
    service: &'static str,
    readiness: Readiness,
    mount: Mount,
    config: &HttpConfig,
) -> Router {
    // Install the recorder before the first request, so nothing recorded early is lost.
    crate::metrics::handle();
    let request_id = HeaderName::from_static("x-request-id");
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
        .route("/metrics", get(metrics_text));
    // Probes are not traced: a not-ready 503 while a service starts is an answer, not a failure
    // (and orchestrators probe every few seconds).
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.max_in_flight));
    let traced = Router::new()
        .fallback(dispatch)
        .with_state(mount)
        .layer(axum::middleware::from_fn(move |req, next| {
            shed(in_flight.clone(), req, next)
        }))
        .layer(TraceLayer::new_for_http().make_span_with(move |request: &Request| {
            let id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", service, method = %request.method(), uri = %request.uri().path(), request_id = %id)
        }));
    health
        .merge(traced)
        .layer(axum::middleware::from_fn(move |req, next| {
            track(service, req, next)
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.request_timeout_secs),
        ))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(json_errors))
}

/// Refuses at once, rather than queueing, what is beyond `http.max_in_flight`: a client told
/// 503 with `Retry-After` can go elsewhere; one left waiting only times out.
async fn shed(in_flight: Arc<tokio::sync::Semaphore>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.try_acquire_owned() else {
        metrics::counter!("flywheel_http_requests_shed_total").increment(1);
        let mut response =
            ApiError::unavailable("too many requests in flight; retry shortly").into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return response;
    };
    next.run(request).await
}

/// Serves until `shutdown`, then lets in-flight requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let stopping = shutdown.clone();
    let server = std::future::IntoFuture::into_future(
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopping.cancelled().await }),
    );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Train {
        model: String,
    }

    fn test_app(max_body_bytes: usize) -> (Router, Mount) {
        let config = HttpConfig {
            max_body_bytes,
            request_timeout_secs: 1,
            ..HttpConfig::default()
        };
        let mount = Mount::default();
        (
            app("test", Readiness::new(false), mount.clone(), &config),
            mount,
        )
    }

    fn routes() -> Router {
        Router::new()
            .route(
                "/train",
                post(|ApiJson(body): ApiJson<Train>| async move { Json(body) }),
            )
            .route(
                "/slow",
                get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
            )
            .route(
                "/boom",
                get(|| async { ApiError::internal("disk on fire at /var/secret") }),
            )
    }

    async fn call(app: &Router, request: Request) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post_json(uri: &str, content_type: &str, body: &str) -> Request {
        Request::post(uri)
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .expect("request")
    }

    #[tokio::test]
    async fn routes_answer_503_until_mounted_then_404_json_for_unknown_paths() {
        let (app, mount) = test_app(1024);
        let (status, body) = call(
            &app,
            Request::get("/train").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
        );
        mount.set(routes());
        let (status, body) = call(
            &app,
            Request::get("/nothing").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, _) = call(
            &app,
            Request::get("/healthz").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn bad_bodies_get_4xx_json_errors() {
        let (app, mount) = test_app(64);
        mount.set(routes());
        let (status, body) = call(
            &app,
            post_json("/train", "application/json", r#"{"model":"churn"}"#),
        )
        .await;
        assert_eq!(
            (status, body["model"].as_str()),
            (StatusCode::OK, Some("churn"))
        );
        let (status, body) = call(&app, post_json("/train", "application/json", "{not json")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request"))
        );
        let (status, body) = call(
            &app,
            post_json("/train", "text/plain", r#"{"model":"churn"}"#),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("unsupported_media_type")
            )
        );
        let (status, body) = call(
            &app,
            post_json("/train", "application/json", r#"{"modle":"churn"}"#),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("unprocessable"))
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("model"),
            "{body}"
        );
        let huge = format!(r#"{{"model":"{}"}}"#, "x".repeat(1000));
        let (status, body) = call(&app, post_json("/train", "application/json", &huge)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
        );
        let (status, body) = call(
            &app,
            Request::delete("/train").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body["message"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn slow_requests_time_out_and_internal_errors_stay_opaque() {
        let (app, mount) = test_app(1024);
        mount.set(routes());
        let (status, body) = call(
            &app,
            Request::get("/slow").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            (body["code"].as_str(), body["message"].as_str()),
            (Some("timeout"), Some("request timed out"))
        );
        let (status, body) = call(
            &app,
            Request::get("/boom").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !body.to_string().contains("secret"),
            "internal detail leaked: {body}"
        );
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_limit_are_refused_at_once_but_probes_answer() {
        let config = HttpConfig {
            max_in_flight: 1,
            request_timeout_secs: 1,
            ..HttpConfig::default()
        };
        let mount = Mount::default();
        let app = app("test", Readiness::new(false), mount.clone(), &config);
        mount.set(routes());
        let first = app.clone();
        let slow = tokio::spawn(async move {
            call(
                &first,
                Request::get("/slow").body(Body::empty()).expect("req"),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let response = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).expect("req"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "refused, not queued"
        );
        let (status, _) = call(
            &app,
            Request::get("/healthz").body(Body::empty()).expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "probes are never refused");
        let (status, _) = slow.await.expect("join");
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "the first one ran");
    }
}
