//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The service is written against tonic's server primitives instead of the
//! generated `TraceServiceServer` so that it owns the codec: decode errors
//! become INVALID_ARGUMENT (the generated prost codec says INTERNAL) and the
//! wire bytes go straight into the lean span model.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::decode::proto::{self as otlp_proto, OtlpProtoError};
use super::{Decoded, Ingest, PROTOCOL_GRPC, ReceiverMetrics, Refusal, SharedSink, ingest, reason};
use crate::validate::{Invalid, Valid};

/// gRPC path of the OTLP trace export method.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP/gRPC receiver settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpGrpcConfig {
    /// Serve OTLP/gRPC at all.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request message accepted, in bytes (after decompression).
    pub max_recv_msg_bytes: usize,
}

impl Default for OtlpGrpcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
            max_recv_msg_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Smallest size limit that still fits a realistic span.
const MIN_MESSAGE_BYTES: usize = 1024;

impl OtlpGrpcConfig {
    /// The section checked as `Config::validate` checks it; panics naming
    /// the problems (tests).
    #[cfg(test)]
    pub(crate) fn checked(self) -> Valid<Self> {
        crate::validate::section(|problems| self.validate("receivers.otlp.grpc", problems))
            .unwrap_or_else(|problems| panic!("invalid OtlpGrpcConfig: {problems:?}"))
    }

    /// Checks every rule; the section as `start` takes it when none is broken.
    pub fn validate(&self, prefix: &str, invalid: &mut Vec<Invalid>) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| this.check(prefix, invalid))
    }

    fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        if self.max_recv_msg_bytes < MIN_MESSAGE_BYTES {
            invalid.push(Invalid {
                key: format!("{prefix}.max_recv_msg_bytes"),
                reason: format!("must be at least {MIN_MESSAGE_BYTES}"),
            });
        }
    }
}

/// Errors of the gRPC receiver, mapped onto gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum OtlpGrpcError {
    /// The request is not a valid `ExportTraceServiceRequest`.
    #[error("invalid OTLP protobuf: {0}")]
    Decode(#[from] OtlpProtoError),
    /// The sink (the pipeline) could not take the spans.
    #[error(transparent)]
    Pipeline(#[from] Refusal),
    /// The listener could not be served.
    #[error("otlp grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl From<OtlpGrpcError> for Status {
    fn from(err: OtlpGrpcError) -> Self {
        match &err {
            OtlpGrpcError::Decode(_) => Status::invalid_argument(err.to_string()),
            OtlpGrpcError::Pipeline(refusal) => match refusal.retry_after() {
                // RetryInfo tells OTLP exporters how long to back off.
                Some(retry_after) => Status::with_error_details(
                    tonic::Code::Unavailable,
                    err.to_string(),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                ),
                None => Status::unavailable(err.to_string()),
            },
            OtlpGrpcError::Serve(_) => Status::internal(err.to_string()),
        }
    }
}

/// The tower service tonic's router serves.
#[derive(Clone)]
pub struct OtlpGrpcService {
    inner: Arc<Inner>,
}

struct Inner {
    sink: SharedSink,
    metrics: Arc<ReceiverMetrics>,
    max_recv_msg_bytes: usize,
}

impl OtlpGrpcService {
    /// Builds the service over the sink spans go to.
    pub fn new(
        config: &Valid<OtlpGrpcConfig>,
        sink: SharedSink,
        metrics: Arc<ReceiverMetrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink,
                metrics,
                max_recv_msg_bytes: config.max_recv_msg_bytes,
            }),
        }
    }

    async fn export(
        inner: Arc<Inner>,
        req: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        // Refused before the body is read: a refusal then costs no memory.
        if let Some(refusal) = inner.sink.refuses_now() {
            inner.metrics.refuse_request(PROTOCOL_GRPC, &refusal);
            return Status::from(OtlpGrpcError::from(refusal)).into_http();
        }
        let codec = OtlpCodec {
            metrics: inner.metrics.clone(),
        };
        let mut grpc = Grpc::new(codec)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(inner.max_recv_msg_bytes);
        let response = grpc.unary(ExportMethod(inner.clone()), req).await;
        too_large_is_resource_exhausted(response, &inner.metrics)
    }
}

/// tonic reports an over-limit message as OUT_OF_RANGE; gRPC's status-code
/// guide and other OTLP servers use RESOURCE_EXHAUSTED, which clients know
/// not to retry unchanged.
fn too_large_is_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
    metrics: &ReceiverMetrics,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    let is_size_error = headers
        .get(Status::GRPC_STATUS)
        .is_some_and(|code| code.as_bytes() == out_of_range.as_bytes());
    if is_size_error {
        headers.insert(
            Status::GRPC_STATUS,
            (tonic::Code::ResourceExhausted as i32).into(),
        );
    }
    let decompression_limit = headers
        .get(Status::GRPC_STATUS)
        .is_some_and(|code| code.as_bytes() == b"8");
    if is_size_error || decompression_limit {
        metrics.reject_request(PROTOCOL_GRPC, reason::TOO_LARGE);
    }
    response
}

impl NamedService for OtlpGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<tonic::body::Body>> for OtlpGrpcService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            if req.uri().path() == EXPORT_PATH {
                Ok(Self::export(inner, req).await)
            } else {
                Ok(
                    Status::unimplemented(format!("unknown method {}", req.uri().path()))
                        .into_http(),
                )
            }
        })
    }
}

struct ExportMethod(Arc<Inner>);

impl UnaryService<Decoded> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Self::Response>, Status>> + Send>,
    >;

    fn call(&mut self, request: Request<Decoded>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let decoded = request.into_inner();
            match ingest(decoded, &*inner.sink, &inner.metrics, PROTOCOL_GRPC).await {
                Ingest::Accepted {
                    rejected_spans,
                    message,
                } => Ok(Response::new(export_response(rejected_spans, message))),
                Ingest::Refused(err) => Err(OtlpGrpcError::from(err).into()),
            }
        })
    }
}

/// The export response; `partial_success` is set only when spans were rejected.
pub(crate) fn export_response(rejected_spans: u64, message: String) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (rejected_spans > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: rejected_spans as i64,
            error_message: message,
        }),
    }
}

/// Codec that decodes straight into lean spans.
struct OtlpCodec {
    metrics: Arc<ReceiverMetrics>,
}

impl Codec for OtlpCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Decoded;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder {
            metrics: self.metrics.clone(),
        }
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|err| Status::internal(format!("encoding response: {err}")))
    }
}

struct RequestDecoder {
    metrics: Arc<ReceiverMetrics>,
}

impl Decoder for RequestDecoder {
    type Item = Decoded;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Decoded>, Status> {
        // Takes the message out of tonic's buffer without copying; the
        // spans' attributes keep referring to it.
        let message = src.copy_to_bytes(src.remaining());
        match otlp_proto::decode(message) {
            Ok(decoded) => Ok(Some(decoded)),
            Err(err) => {
                self.metrics
                    .reject_request(PROTOCOL_GRPC, reason::MALFORMED);
                Err(OtlpGrpcError::from(err).into())
            }
        }
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: OtlpGrpcService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OtlpGrpcError> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
