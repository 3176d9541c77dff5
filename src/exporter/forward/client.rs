//! The OTLP/gRPC client of one gateway: tonic's channel, and a codec that
//! encodes the batch straight into tonic's send buffer (or copies a request
//! already encoded, from the disk queue).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::ForwardError;
use super::config::ForwardConfig;
use super::encode::Batch;
use super::retry::Attempt;
use crate::receiver::otlp_grpc::EXPORT_PATH;

/// HTTP/2 pings on an idle connection, so a gateway that vanished without
/// closing it (node lost) is noticed between batches.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One gateway's connection; reconnects by itself after failures.
#[derive(Clone)]
pub struct GatewayClient {
    grpc: tonic::client::Grpc<Channel>,
    timeout: Duration,
}

impl GatewayClient {
    /// A lazily connected client of `key` (`host:port`).
    pub fn new(key: &str, config: &ForwardConfig) -> Result<Self, ForwardError> {
        let endpoint = Endpoint::from_shared(format!("http://{key}"))
            .map_err(|source| ForwardError::Endpoint {
                endpoint: key.to_owned(),
                source,
            })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(Self {
            grpc: tonic::client::Grpc::new(endpoint.connect_lazy()),
            timeout: config.timeout,
        })
    }

    /// Sends `spans` as one `ExportTraceServiceRequest`, encoded straight
    /// into tonic's send buffer (no copy of the request in between).
    pub async fn export(&mut self, spans: Arc<Batch>) -> Attempt {
        self.call(Body::Spans(spans)).await
    }

    /// Sends an `ExportTraceServiceRequest` encoded earlier (disk records).
    pub async fn export_encoded(&mut self, request: Bytes) -> Attempt {
        self.call(Body::Encoded(request)).await
    }

    async fn call(&mut self, body: Body) -> Attempt {
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|err| tonic::Status::from_error(err.into()))?;
            let mut request = tonic::Request::new(body);
            // Tells the gateway too, so it stops work nobody waits for.
            request.set_timeout(self.timeout);
            let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
            self.grpc.unary(request, path, SpansCodec).await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Attempt::Ok(response.into_inner()),
            Ok(Err(status)) => Attempt::Status(status),
            Err(_elapsed) => Attempt::Timeout,
        }
    }
}

/// What one call sends.
enum Body {
    /// Spans, encoded as the request is written.
    Spans(Arc<Batch>),
    /// A request body written before (the disk queue's records).
    Encoded(Bytes),
}

/// Encodes spans into the request and decodes the export response.
struct SpansCodec;

impl Codec for SpansCodec {
    type Encode = Body;
    type Decode = ExportTraceServiceResponse;
    type Encoder = SpansCodec;
    type Decoder = SpansCodec;

    fn encoder(&mut self) -> SpansCodec {
        SpansCodec
    }

    fn decoder(&mut self) -> SpansCodec {
        SpansCodec
    }
}

impl Encoder for SpansCodec {
    type Item = Body;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        match item {
            Body::Spans(batch) => batch.encode(dst),
            Body::Encoded(request) => dst.put_slice(&request),
        }
        Ok(())
    }
}

impl Decoder for SpansCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|err| tonic::Status::internal(format!("invalid export response: {err}")))
    }
}
