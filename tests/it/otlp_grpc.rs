//! OTLP/gRPC against the real binary: gzip, partial success, bad input.

use crate::support as common;

use common::{Collector, request, spans};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::Code;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};

const ACCEPTED_GRPC: &str = "tracemap_receiver_accepted_spans_total{protocol=\"grpc\"}";

async fn client(collector: &Collector) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(collector.grpc_url())
        .await
        .expect("connect")
        .max_encoding_message_size(64 * 1024 * 1024)
}

/// Sends arbitrary bytes as the Export request body.
#[derive(Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut out);
        Ok(Some(out))
    }
}

async fn send_raw(collector: &Collector, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(collector.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn plain_and_gzip_requests_are_accepted_and_counted() {
    let collector = Collector::start();
    let mut plain = client(&collector).await;
    let resp = plain.export(request("svc-a", spans(10, 1))).await.unwrap();
    assert_eq!(resp.into_inner().partial_success, None);

    let mut gzip = client(&collector)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    gzip.export(request("svc-b", spans(25, 2))).await.unwrap();
    gzip.export(request("svc-b", vec![])).await.unwrap();

    assert_eq!(collector.metric(ACCEPTED_GRPC).await, 35.0);
}

#[tokio::test]
async fn invalid_ids_give_partial_success() {
    let collector = Collector::start();
    let mut batch = spans(5, 1);
    batch[0].trace_id = vec![7; 15];
    batch[4].parent_span_id = vec![1; 9];
    let resp = client(&collector)
        .await
        .export(request("svc", batch))
        .await
        .unwrap()
        .into_inner();
    let partial = resp.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("expected 16 bytes, got 15"),
        "{}",
        partial.error_message
    );
    let text = collector.metrics_text().await;
    assert_eq!(common::series_value(&text, ACCEPTED_GRPC), 3.0);
    assert_eq!(
        common::series_value(
            &text,
            "tracemap_receiver_rejected_spans_total{protocol=\"grpc\",reason=\"invalid_parent_span_id\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn malformed_and_oversize_requests_are_refused_with_the_right_codes() {
    let collector = Collector::start_with_config(
        "receivers:\n  otlp:\n    grpc:\n      max_recv_msg_bytes: 65536\n",
    );
    let status = send_raw(&collector, b"\x0a\xff\xff\xff\xff\x0f".to_vec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("invalid OTLP protobuf"),
        "{status:?}"
    );

    let status = client(&collector)
        .await
        .export(request("svc", spans(2000, 3)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A small gzip message that inflates past the limit.
    let mut bomb = request("svc", spans(1, 4));
    bomb.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(200_000);
    let status = client(&collector)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(bomb)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Empty request: accepted, nothing counted.
    assert!(send_raw(&collector, Vec::new()).await.is_ok());

    // Good data still flows.
    client(&collector)
        .await
        .export(request("svc", spans(4, 5)))
        .await
        .unwrap();
    let text = collector.metrics_text().await;
    assert_eq!(common::series_value(&text, ACCEPTED_GRPC), 4.0);
    let rejected = |reason: &str| {
        common::series_value(
            &text,
            &format!(
                "tracemap_receiver_rejected_requests_total{{protocol=\"grpc\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(rejected("malformed"), 1.0);
    assert_eq!(rejected("too_large"), 2.0);
}
