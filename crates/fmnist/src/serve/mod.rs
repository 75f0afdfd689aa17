//! `fmnist serve`: one embedded web page and a small JSON API around a trained model.
//!
//! `GET /` the page; `GET /api/health`; `GET /api/model`; `POST /api/predict` (the
//! image's bytes as the body, or a multipart form with one file); `GET /api/sample`
//! (a random test image as PNG, its label in `X-Label`, when the dataset is available).
//! Errors are JSON `{"error": "..."}` with a 4xx or 5xx status. Requests are limited in
//! size and time, connections in number, the memory for uploads and for decoding by
//! budgets shared across all connections ([`budget`]), predictions in concurrency, and
//! they run on a pool of the given number of threads; Ctrl-C stops the server after
//! in-flight requests.

pub mod budget;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::data::Dataset;
use crate::model::Classifier;
use crate::predict::{self, DecodeError, Prediction};
use budget::{BODY_BUDGET, Budget, DECODE_BUDGET, Lease, SMALL_BODY_BUDGET, SMALL_UPLOAD};

/// Longest time a request may take to send its image.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest pause in an upload before it is given up (its budget is returned).
const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause after which an upload gives its budget up when others are waiting for it.
const STALLED_UNDER_PRESSURE: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait for a request's headers, on a new connection or a kept-alive one.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Most connections open at once: bounds file descriptors and memory whatever clients do.
pub const MAX_CONNECTIONS: usize = 512;

/// Longest request target accepted (longer ones get 414).
pub const MAX_URI: usize = 8 << 10;

/// Most header bytes, and headers, a request may have (more get 431).
pub const MAX_HEADER_BYTES: usize = 16 << 10;
const MAX_HEADERS: usize = 100;

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
    /// Requests decoded and classified at once; more wait their turn.
    pub concurrency: usize,
    /// Worker threads that decode and classify (at most this many predictions run at
    /// the same moment).
    pub threads: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 8 << 20,
            concurrency: 4,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
    /// Copies of the model, one per prediction that can run at once, lent out in turn.
    models: Mutex<Vec<Classifier>>,
    /// `GET /api/model`'s body, computed once.
    info: serde_json::Value,
    /// Test images for `GET /api/sample`, when the dataset was found.
    samples: Option<Dataset>,
    /// Requests admitted to decoding and classification.
    permits: Semaphore,
    /// One permit per model copy.
    model_slots: Arc<Semaphore>,
    /// Where decoding and classification run.
    pool: rayon::ThreadPool,
    /// Upload bytes held across all connections.
    bodies: Budget,
    /// The same for uploads that declare at most [`SMALL_UPLOAD`] bytes.
    small_bodies: Budget,
    /// Bytes of images being decoded.
    decoding: Budget,
    /// The request-size limit.
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
pub fn app(
    model: Classifier,
    samples: Option<Dataset>,
    cfg: &ServeConfig,
) -> anyhow::Result<Router> {
    let info = serde_json::json!({
        "name": if model.networks() > 1 { model.describe() } else { model.spec.name.clone() },
        "parameters": model.num_params(),
        "networks": model.networks(),
        "classes": model.classes,
        "architecture": model.spec,
        "training": model.summary,
        "inference": model.inference,
        "precision": model.net.precision().name(),
    });
    let threads = cfg.threads.max(1);
    let copies = cfg.concurrency.clamp(1, threads);
    let bytes = model.to_bytes()?;
    // The file holds the weights, not the arithmetic: every copy infers as the first.
    let precision = model.net.precision();
    let mut models = vec![model];
    for _ in 1..copies {
        let mut copy = Classifier::from_bytes(&bytes)?;
        copy.set_precision(precision);
        models.push(copy);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fmnist-predict-{i}"))
        .build()
        .context("cannot start the prediction threads")?;
    let state = Arc::new(AppState {
        models: Mutex::new(models),
        info,
        samples,
        permits: Semaphore::new(cfg.concurrency.max(1)),
        model_slots: Arc::new(Semaphore::new(copies)),
        pool,
        // Room for the largest upload and its copy out of a multipart form.
        bodies: Budget::new(BODY_BUDGET.max(2 * cfg.max_body)),
        small_bodies: Budget::new(SMALL_BODY_BUDGET),
        decoding: Budget::new(DECODE_BUDGET),
        max_body: cfg.max_body,
    });
    Ok(Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/api/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/api/model", get(model_info))
        .route("/api/predict", post(predict_handler))
        .route("/api/sample", get(sample))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "that method is not allowed here".into(),
            )
        })
        // `read_body` is the limit, shared across connections; axum's own default
        // (2 MB for a multipart field) would cut uploads the server accepts.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_limits))
        .with_state(state))
}

/// 414 and 431 as JSON, like every other error: the limits sit below hyper's own, which
/// answer with a bare status line.
async fn request_limits(req: Request, next: axum::middleware::Next) -> Response {
    let uri = req.uri().to_string().len();
    if uri > MAX_URI {
        return ApiError(
            StatusCode::URI_TOO_LONG,
            format!(
                "the address is {uri} bytes long, more than {}",
                mib(MAX_URI)
            ),
        )
        .into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request has {} headers in {bytes} bytes, more than {MAX_HEADERS} or {}",
                headers.len(),
                mib(MAX_HEADER_BYTES)
            ),
        )
        .into_response();
    }
    next.run(req).await
}

async fn model_info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.info.clone())
}

/// 413, naming the limit.
fn too_large(max_body: usize) -> ApiError {
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload is larger than the server accepts ({})",
            mib(max_body)
        ),
    )
}

/// A request's whole body, at most `max_body` bytes, held against the shared upload
/// budget (the lease is returned with the bytes). A declared length over the limit is
/// refused before a byte is read.
async fn read_body(
    body: Body,
    declared: Option<usize>,
    max_body: usize,
    budget: &Budget,
) -> Result<(Vec<u8>, Vec<Lease>), ApiError> {
    if declared.is_some_and(|n| n > max_body) {
        return Err(too_large(max_body));
    }
    // A declared length is leased whole before reading, so that uploads waiting for
    // room hold none; without one, bytes are leased as they arrive. A holder gives its
    // lease up after [`UPLOAD_IDLE`] without a new byte, or sooner when others wait.
    const STEP: usize = 256 << 10;
    let busy = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy receiving other uploads; try again shortly".into(),
        )
    };
    let lease = |bytes: usize| async move {
        tokio::time::timeout(UPLOAD_TIMEOUT, budget.lease(bytes))
            .await
            .ok()
            .flatten()
            .ok_or_else(busy)
    };
    let mut leases = Vec::new();
    let mut leased = 0;
    if let Some(n) = declared.filter(|&n| n > 0) {
        leases.push(lease(n).await?);
        leased = n;
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(leased);
    let mut body = body;
    let stalled = |secs: u64| {
        ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!("the upload stalled: nothing arrived for {secs} s"),
        )
    };
    loop {
        let last_progress = tokio::time::Instant::now();
        let next = loop {
            tokio::select! {
                next = body.frame() => break next,
                () = tokio::time::sleep_until(last_progress + UPLOAD_IDLE) => {
                    return Err(stalled(UPLOAD_IDLE.as_secs()));
                }
                // Others wait for the budget: an upload that holds some and has sent
                // nothing for a second gives it up.
                () = budget.pressed(), if leased > 0 => {
                    if last_progress.elapsed() >= STALLED_UNDER_PRESSURE {
                        return Err(stalled(STALLED_UNDER_PRESSURE.as_secs()));
                    }
                }
            }
        };
        let frame = match next {
            None => break,
            Some(frame) => frame.map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request: {e}"),
                )
            })?,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > max_body {
            return Err(too_large(max_body));
        }
        let need = (bytes.len() + data.len()).saturating_sub(leased);
        if need > 0 {
            let step = STEP.max(need);
            leases.push(lease(step).await?);
            leased += step;
            bytes.reserve_exact(leased - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes, leases))
}

/// The image bytes of a request: the raw body, or the first file of a multipart form.
async fn image_bytes(req: Request, state: &AppState) -> Result<(Bytes, Vec<Lease>), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let multipart = content_type.starts_with("multipart/form-data");
    let accepted = multipart
        || content_type.is_empty()
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
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let (parts, body) = req.into_parts();
    // Small uploads have a budget of their own, so that big ones cannot keep them out.
    let budget = match declared {
        Some(n) if n <= SMALL_UPLOAD => &state.small_bodies,
        _ => &state.bodies,
    };
    let (bytes, leases) = read_body(body, declared, state.max_body, budget).await?;
    if !multipart {
        return Ok((Bytes::from(bytes), leases));
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad multipart form: {e}")))?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError(StatusCode::BAD_REQUEST, format!("bad multipart form: {e}"))
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.file_name().is_some() || field.name() == Some("image") {
            return Ok((field.bytes().await.map_err(bad)?, leases));
        }
    }
    Err(ApiError(
        StatusCode::BAD_REQUEST,
        "the form has no image file".into(),
    ))
}

async fn predict_handler(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<PredictResponse>, ApiError> {
    // A client that trickles its upload must not hold a connection for ever.
    let (bytes, body_lease) = tokio::time::timeout(UPLOAD_TIMEOUT, image_bytes(req, &state))
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
    let unavailable = |_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    let _permit = state.permits.acquire().await.map_err(unavailable)?;
    // What decoding will take, from the header; the bytes wait for room in the budget.
    let cost = predict::decode_cost(&bytes).map_err(decode_error)?;
    let decode_lease = state
        .decoding
        .lease(usize::try_from(cost).unwrap_or(usize::MAX))
        .await
        .ok_or_else(|| {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the image needs {:.0} MB to decode, more than the server's {}",
                    cost as f64 / 1e6,
                    mib(state.decoding.bytes())
                ),
            )
        })?;
    let slot = state
        .model_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(unavailable)?;
    let mut model = state
        .models
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no model free".into()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let max_alloc = state.decoding.bytes() as u64;
    let shared = state.clone();
    // The task owns the model, its slot, the upload and the decoding budget until it is
    // done with each, so that a client that goes away meanwhile loses none of them.
    state.pool.spawn(move || {
        let outcome = (|| {
            let img = predict::decode_within(&bytes, max_alloc);
            drop((bytes, body_lease));
            let img = img?;
            let input = predict::prepare(&img);
            drop(img);
            let k = model.classes.len();
            let names = ["upload".to_string()];
            let prediction =
                predict::rank_inputs(&mut model, &names, std::slice::from_ref(&input), k)
                    .pop()
                    .ok_or(DecodeError::Invalid("no prediction".into()))?;
            Ok::<_, DecodeError>(PredictResponse {
                input: input.seen(prediction.view).to_vec(),
                prediction,
            })
        })();
        shared
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(model);
        drop((slot, decode_lease));
        let _ = tx.send(outcome);
    });
    let outcome = rx.await.map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the prediction failed".into(),
        )
    })?;
    outcome.map(Json).map_err(decode_error)
}

/// A decoding failure as the API reports it.
fn decode_error(e: DecodeError) -> ApiError {
    match e {
        DecodeError::NotAnImage => ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()),
        DecodeError::Invalid(m) => ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot decode the image: {m}"),
        ),
    }
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
    give_memory_back();
    let service = TowerToHyperService::new(app(model, samples, &cfg)?);
    // axum::serve sets no timer, so hyper would wait for headers forever: a client that
    // connects and sends nothing (or a byte a minute) would hold its connection for good.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // Each connection's read buffer stays small; requests past these limits get
        // hyper's bare 431, those below them reach `request_limits` and get JSON.
        .max_buf_size(4 * MAX_HEADER_BYTES)
        .max_headers(2 * MAX_HEADERS);
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

/// Large buffers (uploads, decoded images) go straight to the system and back when
/// freed: glibc's default raises its mmap threshold after each large free, after which
/// such buffers come from the heap and are kept (the server stayed at 550 MB after 64
/// stalled 8 MiB uploads had closed).
fn give_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the server
    // allocates its buffers, and any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}
