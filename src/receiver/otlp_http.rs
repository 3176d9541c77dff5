//! OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, optionally gzip.
//!
//! Responses follow the OTLP/HTTP spec: the body is encoded like the
//! request (an `ExportTraceServiceResponse` on success, a `google.rpc.Status`
//! on failure), 400 for bad data, 413 for oversize, 415 for unsupported
//! content types and encodings, 503 with `Retry-After` when queues are full.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::decode::proto::OtlpProtoError;
use super::decode::{json as otlp_json, proto as otlp_proto};
use super::otlp_grpc::export_response;
use super::{Decoded, Ingest, PROTOCOL_HTTP, ReceiverMetrics, Refusal, SharedSink, ingest, reason};
use crate::validate::{Invalid, Valid};

/// Path OTLP exporters post traces to.
pub const TRACES_PATH: &str = "/v1/traces";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// Bodies above this size are decoded off the async threads.
const BLOCKING_DECODE_BYTES: usize = 256 * 1024;

/// OTLP/HTTP receiver settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpConfig {
    /// Serve OTLP/HTTP at all.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes, both as sent and after gzip decompression.
    pub max_request_body_bytes: usize,
}

impl Default for OtlpHttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
            max_request_body_bytes: 4 * 1024 * 1024,
        }
    }
}

impl OtlpHttpConfig {
    /// Checks every rule; the section as `start` takes it when none is broken.
    pub fn validate(&self, prefix: &str, invalid: &mut Vec<Invalid>) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| this.check(prefix, invalid))
    }

    fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        if self.max_request_body_bytes < 1024 {
            invalid.push(Invalid {
                key: format!("{prefix}.max_request_body_bytes"),
                reason: "must be at least 1024".into(),
            });
        }
    }
}

/// Why an OTLP/HTTP request failed, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum OtlpHttpError {
    /// Content-Type is neither protobuf nor JSON.
    #[error("unsupported content type {0:?}, expected application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// Content-Encoding is neither gzip nor identity.
    #[error("unsupported content encoding {0:?}, expected gzip or identity")]
    UnsupportedEncoding(String),
    /// Body over the limit, compressed or not.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Body could not be read or decompressed.
    #[error("cannot read request body: {0}")]
    Body(String),
    /// Not a valid protobuf request.
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(#[from] OtlpProtoError),
    /// Not a valid JSON request.
    #[error("invalid OTLP JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The sink (the pipeline) could not take the spans.
    #[error(transparent)]
    Pipeline(#[from] Refusal),
}

impl OtlpHttpError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::Protobuf(_) | Self::Json(_) => StatusCode::BAD_REQUEST,
            Self::Pipeline(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedMediaType(_) => reason::UNSUPPORTED_MEDIA_TYPE,
            Self::UnsupportedEncoding(_) => reason::UNSUPPORTED_ENCODING,
            Self::TooLarge { .. } => reason::TOO_LARGE,
            Self::Body(_) | Self::Protobuf(_) | Self::Json(_) => reason::MALFORMED,
            Self::Pipeline(refusal) => refusal.reason(),
        }
    }

    /// gRPC code carried in the `google.rpc.Status` body.
    fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::TooLarge { .. } => tonic::Code::ResourceExhausted,
            Self::Pipeline(_) => tonic::Code::Unavailable,
            _ => tonic::Code::InvalidArgument,
        }
    }
}

/// `google.rpc.Status`, the OTLP/HTTP error body; two fields do not justify
/// another generated-proto dependency.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        }
    }
}

#[derive(Clone)]
struct HttpState {
    sink: SharedSink,
    metrics: Arc<ReceiverMetrics>,
    max_body: usize,
}

/// The `/v1/traces` router.
pub fn router(
    config: &Valid<OtlpHttpConfig>,
    sink: SharedSink,
    metrics: Arc<ReceiverMetrics>,
) -> Router {
    let state = HttpState {
        sink,
        metrics,
        max_body: config.max_request_body_bytes,
    };
    Router::new()
        .route(TRACES_PATH, post(export_traces))
        // The handler enforces the limit itself, to answer 413 in OTLP form.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn export_traces(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    // Unknown content type: answer in JSON, the only encoding a person can read.
    let encoding = match content_encoding_of(&headers) {
        Ok(encoding) => encoding,
        Err(err) => return error_response(&state, Encoding::Json, err),
    };
    match handle(&state, encoding, &headers, body).await {
        Ok(response) => response,
        Err(err) => error_response(&state, encoding, err),
    }
}

fn content_encoding_of(headers: &HeaderMap) -> Result<Encoding, OtlpHttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(OtlpHttpError::UnsupportedMediaType(content_type.to_owned())),
    }
}

async fn handle(
    state: &HttpState,
    encoding: Encoding,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OtlpHttpError> {
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => return Err(OtlpHttpError::UnsupportedEncoding(other.to_owned())),
    };
    // Refused before the body is read: a refusal then costs no memory.
    if let Some(refusal) = state.sink.refuses_now() {
        state.metrics.refuse_request(PROTOCOL_HTTP, &refusal);
        return Err(refusal.into());
    }
    let limit = state.max_body;
    let body = axum::body::to_bytes(body, limit).await.map_err(|err| {
        if is_length_limit(&err) {
            OtlpHttpError::TooLarge { limit }
        } else {
            OtlpHttpError::Body(err.to_string())
        }
    })?;
    let decoded = if body.len() > BLOCKING_DECODE_BYTES || gzip {
        tokio::task::spawn_blocking(move || decode_body(body, gzip, encoding, limit))
            .await
            .map_err(|err| OtlpHttpError::Body(err.to_string()))??
    } else {
        decode_body(body, gzip, encoding, limit)?
    };
    match ingest(decoded, &*state.sink, &state.metrics, PROTOCOL_HTTP).await {
        Ingest::Accepted {
            rejected_spans,
            message,
        } => Ok(success_response(encoding, rejected_spans, message)),
        Ingest::Refused(err) => Err(err.into()),
    }
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Decodes a whole body; protobuf spans keep referring to `body` (or to
/// its inflated copy) instead of copying their attributes out.
fn decode_body(
    body: Bytes,
    gzip: bool,
    encoding: Encoding,
    limit: usize,
) -> Result<Decoded, OtlpHttpError> {
    let bytes = if gzip {
        Bytes::from(gunzip(&body, limit)?)
    } else {
        body
    };
    match encoding {
        Encoding::Protobuf => Ok(otlp_proto::decode(bytes)?),
        // An empty body is an empty request, as it is in protobuf.
        Encoding::Json if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Decoded::default()),
        Encoding::Json => Ok(otlp_json::decode(&bytes)?),
    }
}

/// Inflates at most `limit` bytes so a small bomb cannot exhaust memory.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, OtlpHttpError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| OtlpHttpError::Body(format!("invalid gzip: {err}")))?;
    if out.len() > limit {
        return Err(OtlpHttpError::TooLarge { limit });
    }
    Ok(out)
}

fn success_response(encoding: Encoding, rejected_spans: u64, message: String) -> Response {
    let body: Bytes = match encoding {
        Encoding::Protobuf => export_response(rejected_spans, message)
            .encode_to_vec()
            .into(),
        Encoding::Json if rejected_spans == 0 => Bytes::from_static(b"{}"),
        // proto3 JSON writes int64 as a string.
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "partialSuccess": {"rejectedSpans": rejected_spans.to_string(), "errorMessage": message}
        }))
        .expect("serializing a json value")
        .into(),
    };
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

fn error_response(state: &HttpState, encoding: Encoding, err: OtlpHttpError) -> Response {
    if !matches!(err, OtlpHttpError::Pipeline(_)) {
        state.metrics.reject_request(PROTOCOL_HTTP, err.reason());
        tracing::debug!(error = %err, "otlp http request rejected");
    }
    let status = RpcStatus {
        code: err.grpc_code() as i32,
        message: err.to_string(),
    };
    let body: Bytes = match encoding {
        Encoding::Protobuf => status.encode_to_vec().into(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": status.code, "message": status.message
        }))
        .expect("serializing a json value")
        .into(),
    };
    let mut response = (
        err.status(),
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let OtlpHttpError::Pipeline(refusal) = err
        && let Some(retry_after) = refusal.retry_after()
    {
        let seconds = retry_after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Serves OTLP/HTTP on `listener` until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
