//! `fmnist serve`: one embedded web page and a small JSON API around a trained model.
//!
//! `GET /` the page; `GET /api/health`; `GET /api/model`; `POST /api/predict` (the
//! image's bytes as the body, or a multipart form with one file); `GET /api/sample`
//! (a random test image as PNG, its label in `X-Label`, when the dataset is available).
//! Errors are JSON `{"error": "..."}` with a 4xx status. Requests are limited in size
//! and time, predictions in concurrency, connections in number, and Ctrl-C stops the
//! server after in-flight requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::data::Dataset;
use crate::model::classifier::Classifier;
use crate::predict::{self, DecodeError, Prediction};

/// Longest time a request may take to send its image.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest wait for a request's headers, on a new connection or a kept-alive one.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Most connections open at once: bounds file descriptors and memory whatever clients do.
pub const MAX_CONNECTIONS: usize = 512;

/// How long Ctrl-C waits for open connections before the server exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The page, embedded in the binary.
const PAGE: &str = include_str!("index.html");

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Largest accepted request body in bytes.
    pub max_body: usize,
    /// Predictions computed at once; more wait their turn.
    pub concurrency: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 8 << 20,
            concurrency: 4,
        }
    }
}

/// What a prediction returns: `predict --json`'s fields plus the 28×28 input the model saw.
#[derive(Serialize)]
struct PredictResponse {
    #[serde(flatten)]
    prediction: Prediction,
    /// The model's input, 784 pixels row after row.
    input: Vec<u8>,
}

struct AppState {
    /// One model, used by one request at a time (a prediction takes tens of microseconds).
    model: Mutex<Classifier>,
    /// `GET /api/model`'s body, computed once.
    info: serde_json::Value,
    /// Test images for `GET /api/sample`, when the dataset was found.
    samples: Option<Dataset>,
    permits: Semaphore,
    /// The request-size limit, for the error message.
    max_body: usize,
}

/// A byte count as people say it: "8 MiB", "512 KiB", "100 bytes".
fn mib(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// An error as the API returns it: a status and `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The application: routes, limits and state. `samples` serves random test images.
pub fn app(model: Classifier, samples: Option<Dataset>, cfg: &ServeConfig) -> Router {
    let info = serde_json::json!({
        "name": model.spec.name,
        "parameters": model.net.num_params(),
        "classes": model.classes,
        "architecture": model.spec,
        "training": model.summary,
        "inference": model.inference,
    });
    let state = Arc::new(AppState {
        model: Mutex::new(model),
        info,
        samples,
        permits: Semaphore::new(cfg.concurrency.max(1)),
        max_body: cfg.max_body,
    });
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/api/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/api/model", get(model_info))
        .route("/api/predict", post(predict_handler))
        .route("/api/sample", get(sample))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .with_state(state)
}

async fn model_info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.info.clone())
}

/// The image bytes of a request: the raw body, or the first file of a multipart form.
async fn image_bytes(req: Request, max_body: usize) -> Result<Bytes, ApiError> {
    let too_large = |e: &dyn std::fmt::Display| {
        let text = e.to_string();
        if text.contains("length limit") || text.contains("too large") {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload is larger than the server accepts ({})",
                    mib(max_body)
                ),
            )
        } else {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request: {text}"),
            )
        }
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad multipart form: {e}")))?;
        while let Some(field) = form.next_field().await.map_err(|e| too_large(&e))? {
            if field.file_name().is_some() || field.name() == Some("image") {
                return field.bytes().await.map_err(|e| too_large(&e));
            }
        }
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the form has no image file".into(),
        ));
    }
    let accepted = content_type.is_empty()
        || content_type.starts_with("image/")
        || content_type.starts_with("application/octet-stream");
    if !accepted {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send an image (image/*, application/octet-stream or a multipart form), not {content_type}"
            ),
        ));
    }
    Bytes::from_request(req, &())
        .await
        .map_err(|e| too_large(&e))
}

async fn predict_handler(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<PredictResponse>, ApiError> {
    // A client that trickles its upload must not hold a connection for ever.
    let bytes = tokio::time::timeout(UPLOAD_TIMEOUT, image_bytes(req, state.max_body))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!("the upload took longer than {} s", UPLOAD_TIMEOUT.as_secs()),
            )
        })??;
    if bytes.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the request has no image".into(),
        ));
    }
    let _permit = state
        .permits
        .acquire()
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
    let state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let img = predict::decode_bytes(&bytes)?;
        let input = predict::preprocess(&img);
        let mut model = state.model.lock().unwrap_or_else(|e| e.into_inner());
        let k = model.classes.len();
        let prediction = predict::rank(&mut model, &["upload".to_string()], &input, k)
            .pop()
            .ok_or(DecodeError::Invalid("no prediction".into()))?;
        Ok::<_, DecodeError>(PredictResponse { prediction, input })
    })
    .await
    .map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the prediction failed".into(),
        )
    })?;
    outcome.map(Json).map_err(|e| match e {
        DecodeError::NotAnImage => ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()),
        DecodeError::Invalid(m) => ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot decode the image: {m}"),
        ),
    })
}

/// A random test image as PNG, its label in `X-Label` and class in `X-Class`.
async fn sample(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let data = state.samples.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "the server has no test images (the dataset was not found)".into(),
        )
    })?;
    let i = rand_index(data.len());
    let png = predict::input_png(data.image(i))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let label = data.labels[i] as usize;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    headers.insert("x-label", HeaderValue::from(label));
    let class = crate::data::CLASS_NAMES.get(label).copied().unwrap_or("");
    if let Ok(v) = HeaderValue::from_str(class) {
        headers.insert("x-class", v);
    }
    headers.insert("x-index", HeaderValue::from(i));
    Ok((headers, png).into_response())
}

/// A random index below `n`, seeded from the clock (samples need no reproducibility).
fn rand_index(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nn::Rng::new(nanos).below(n.max(1))
}

/// Serves until Ctrl-C, then finishes the requests in flight. `ready` is called with
/// the bound address once the server listens.
pub async fn serve(
    model: Classifier,
    samples: Option<Dataset>,
    cfg: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.addr))?;
    ready(listener.local_addr()?);
    let service = TowerToHyperService::new(app(model, samples, &cfg));
    // axum::serve sets no timer, so hyper would wait for headers forever: a client that
    // connects and sends nothing (or a byte a minute) would hold its connection for good.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connections = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (stream, slot) = tokio::select! {
            _ = &mut ctrl_c => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let connection =
            connections.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    // Requests in flight get a grace period; idle connections close at once, and a
    // stalled client does not keep the server from stopping.
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
    Ok(())
}

/// The next connection, once fewer than [`MAX_CONNECTIONS`] are open (the rest wait in
/// the kernel's queue). Accept errors (out of file descriptors, a connection reset
/// before it was accepted) are waited out rather than ending the server.
async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<Semaphore>,
) -> (
    tokio::net::TcpStream,
    Option<tokio::sync::OwnedSemaphorePermit>,
) {
    // The semaphore is never closed, so acquiring only waits.
    let slot = slots.clone().acquire_owned().await.ok();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return (stream, slot);
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
