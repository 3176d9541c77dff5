//! Attributes read once: each key classified by the role translation
//! gives it, and the set of roles written as fields.

use std::borrow::Cow;

use crate::model::{AttributeValue, Attributes, ValueRef};

/// The attributes translation reads, by role. Keys of both semantic
/// convention generations map to the same role; the first present wins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Field {
    // HTTP
    HttpMethod,
    HttpStatus,
    HttpUrl,
    HttpScheme,
    HttpHost,
    HttpTarget,
    HttpServerName,
    HttpClientIp,
    HttpUserAgent,
    HttpContentLength,
    HttpStatusText,
    UrlPath,
    UrlQuery,
    ServerAddress,
    ServerPort,
    NetHostName,
    NetHostPort,
    NetPeerName,
    NetPeerPort,
    NetPeerIp,
    NetworkPeerAddress,
    ClientAddress,
    // Databases
    DbSystem,
    DbName,
    DbStatement,
    DbUser,
    DbConnectionString,
    // AWS and RPC
    RpcSystem,
    RpcService,
    RpcMethod,
    AwsService,
    AwsOperation,
    AwsAccount,
    AwsRegion,
    CloudRegion,
    AwsRequestId,
    AwsQueueUrl,
    MessagingUrl,
    MessagingSystem,
    AwsTableName,
    DynamoDbTableNames,
    AwsRemoteService,
    AwsLocalService,
    PeerService,
    EnduserId,
    XrayAnnotations,
    // Resource
    CloudProvider,
    CloudPlatform,
    CloudAccount,
    CloudZone,
    HostId,
    HostType,
    HostImageId,
    ContainerName,
    ContainerId,
    ContainerImageTag,
    K8sPod,
    K8sCluster,
    ServiceNamespace,
    ServiceInstance,
    ServiceVersion,
    SdkName,
    SdkLanguage,
    SdkVersion,
    AutoVersion,
    EcsClusterArn,
    EcsContainerArn,
    EcsTaskArn,
    EcsTaskFamily,
    EcsLaunchType,
    LogGroupNames,
    LogGroupArns,
}

pub(super) const FIELDS: usize = Field::LogGroupArns as usize + 1;

pub(super) fn span_field(key: &str) -> Option<Field> {
    use Field::*;
    Some(match key {
        "http.method" | "http.request.method" => HttpMethod,
        "http.status_code" | "http.response.status_code" => HttpStatus,
        "http.url" | "url.full" => HttpUrl,
        "http.scheme" | "url.scheme" => HttpScheme,
        "http.host" => HttpHost,
        "http.target" => HttpTarget,
        "http.server_name" => HttpServerName,
        "http.client_ip" => HttpClientIp,
        "http.user_agent" | "user_agent.original" => HttpUserAgent,
        "http.response_content_length" | "http.response.body.size" => HttpContentLength,
        "http.status_text" => HttpStatusText,
        "url.path" => UrlPath,
        "url.query" => UrlQuery,
        "server.address" => ServerAddress,
        "server.port" => ServerPort,
        "net.host.name" => NetHostName,
        "net.host.port" => NetHostPort,
        "net.peer.name" => NetPeerName,
        "net.peer.port" => NetPeerPort,
        "net.peer.ip" => NetPeerIp,
        "network.peer.address" => NetworkPeerAddress,
        "client.address" => ClientAddress,
        "db.system" | "db.system.name" => DbSystem,
        "db.name" | "db.namespace" => DbName,
        "db.statement" | "db.query.text" => DbStatement,
        "db.user" => DbUser,
        "db.connection_string" => DbConnectionString,
        "rpc.system" => RpcSystem,
        "rpc.service" => RpcService,
        "rpc.method" => RpcMethod,
        "aws.service" => AwsService,
        "aws.operation" => AwsOperation,
        "aws.account_id" => AwsAccount,
        "aws.region" => AwsRegion,
        "cloud.region" => CloudRegion,
        "aws.request_id" | "aws.requestId" => AwsRequestId,
        "aws.queue_url" | "aws.queue.url" | "aws.sqs.queue.url" => AwsQueueUrl,
        "messaging.url" => MessagingUrl,
        "messaging.system" => MessagingSystem,
        "aws.table_name" | "aws.table.name" => AwsTableName,
        "aws.dynamodb.table_names" => DynamoDbTableNames,
        "aws.remote.service" => AwsRemoteService,
        "aws.local.service" => AwsLocalService,
        "peer.service" => PeerService,
        "enduser.id" => EnduserId,
        "aws.xray.annotations" => XrayAnnotations,
        _ => return None,
    })
}

pub(super) fn resource_field(key: &str) -> Option<Field> {
    use Field::*;
    Some(match key {
        "cloud.provider" => CloudProvider,
        "cloud.platform" => CloudPlatform,
        "cloud.account.id" => CloudAccount,
        "cloud.availability_zone" => CloudZone,
        "host.id" => HostId,
        "host.type" => HostType,
        "host.image.id" => HostImageId,
        "container.name" => ContainerName,
        "container.id" => ContainerId,
        "container.image.tag" => ContainerImageTag,
        "k8s.pod.name" => K8sPod,
        "k8s.cluster.name" => K8sCluster,
        "service.namespace" => ServiceNamespace,
        "service.instance.id" => ServiceInstance,
        "service.version" => ServiceVersion,
        "telemetry.sdk.name" => SdkName,
        "telemetry.sdk.language" => SdkLanguage,
        "telemetry.sdk.version" => SdkVersion,
        "telemetry.auto.version" | "telemetry.distro.version" => AutoVersion,
        "aws.ecs.cluster.arn" => EcsClusterArn,
        "aws.ecs.container.arn" => EcsContainerArn,
        "aws.ecs.task.arn" => EcsTaskArn,
        "aws.ecs.task.family" => EcsTaskFamily,
        "aws.ecs.launchtype" => EcsLaunchType,
        "aws.log.group.names" => LogGroupNames,
        "aws.log.group.arns" => LogGroupArns,
        _ => return None,
    })
}

/// A set of [`Field`]s.
#[derive(Clone, Copy, Default)]
pub(super) struct Used(pub(super) u128);

impl Used {
    pub(super) fn add(&mut self, field: Field) {
        self.0 |= 1 << field as u32;
    }

    pub(super) fn has(self, field: Field) -> bool {
        self.0 & (1 << field as u32) != 0
    }
}

/// Attributes read in one pass, with the position of each known role.
pub(super) struct Attrs<'a> {
    /// Strings borrow from the span's request buffer (or, for the resource
    /// cache, live in decoded values): an owned value per attribute cost a
    /// tenth of the X-Ray path.
    pub(super) pairs: Vec<(Cow<'a, str>, ValueRef<'a>, Option<Field>)>,
    /// Length of the keys and string values, to size the document.
    pub(super) bytes: usize,
    /// Index + 1 into `pairs`; 0 when absent.
    pub(super) slots: [u16; FIELDS],
}

impl Attrs<'static> {
    /// Keys copied, for the resource cache.
    pub(super) fn collect_owned(
        attributes: &Attributes,
        classify: fn(&str) -> Option<Field>,
    ) -> Self {
        Self::from_pairs(
            attributes
                .iter()
                .map(|(key, value)| (Cow::Owned(key.to_owned()), ValueRef::Decoded(value))),
            attributes.len(),
            classify,
        )
    }
}

impl<'a> Attrs<'a> {
    /// Keys borrowed from `attributes`.
    pub(super) fn collect(attributes: &'a Attributes, classify: fn(&str) -> Option<Field>) -> Self {
        Self::from_pairs(
            attributes
                .iter_ref()
                .map(|(key, value)| (Cow::Borrowed(key), value)),
            attributes.len(),
            classify,
        )
    }

    pub(super) fn from_pairs(
        attributes: impl Iterator<Item = (Cow<'a, str>, ValueRef<'a>)>,
        len: usize,
        classify: fn(&str) -> Option<Field>,
    ) -> Self {
        let mut pairs = Vec::with_capacity(len);
        let mut slots = [0u16; FIELDS];
        let mut bytes = 0;
        for (key, value) in attributes {
            bytes += key.len() + value.as_str().map_or(8, str::len);
            let field = classify(&key);
            if let Some(field) = field
                && slots[field as usize] == 0
                && let Ok(position) = u16::try_from(pairs.len() + 1)
            {
                slots[field as usize] = position;
            }
            pairs.push((key, value, field));
        }
        Self {
            pairs,
            bytes,
            slots,
        }
    }

    pub(super) fn value(&self, field: Field) -> Option<&ValueRef<'a>> {
        match self.slots[field as usize] {
            0 => None,
            i => Some(&self.pairs[usize::from(i) - 1].1),
        }
    }

    /// A non-empty string value.
    pub(super) fn str(&self, field: Field) -> Option<&str> {
        self.value(field)?.as_str().filter(|s| !s.is_empty())
    }

    pub(super) fn int(&self, field: Field) -> Option<i64> {
        match self.value(field)? {
            ValueRef::Decoded(AttributeValue::Double(d)) if d.fract() == 0.0 && d.abs() < 1e15 => {
                Some(*d as i64)
            }
            value => value.as_i64(),
        }
    }

    /// A port, which SDKs send as an integer or a string.
    pub(super) fn port(&self, field: Field) -> Option<Cow<'_, str>> {
        let value = self.value(field)?;
        match (value.as_str(), value.as_i64()) {
            (Some(s), _) if !s.is_empty() => Some(Cow::Borrowed(s)),
            (_, Some(i)) => Some(Cow::Owned(i.to_string())),
            _ => None,
        }
    }

    /// Strings of a string array, or the one string (as set through
    /// `OTEL_RESOURCE_ATTRIBUTES`).
    pub(super) fn strs(&self, field: Field) -> Vec<&str> {
        let Some(value) = self.value(field) else {
            return Vec::new();
        };
        if let Some(s) = value.as_str() {
            return if s.is_empty() { Vec::new() } else { vec![s] };
        }
        match value {
            ValueRef::Decoded(AttributeValue::Array(items)) => items
                .iter()
                .filter_map(AttributeValue::as_str)
                .filter(|s| !s.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::model::{Resource, SpanKind};

    /// Attributes as the OTLP protobuf decoder leaves them (wire bytes).
    fn encoded(pairs: &[(&str, AttributeValue)]) -> Attributes {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
        fn any(value: &AttributeValue) -> AnyValue {
            let value = match value {
                AttributeValue::String(s) => any_value::Value::StringValue(s.clone()),
                AttributeValue::Int(i) => any_value::Value::IntValue(*i),
                AttributeValue::Bool(b) => any_value::Value::BoolValue(*b),
                AttributeValue::Double(d) => any_value::Value::DoubleValue(*d),
                AttributeValue::Array(items) => any_value::Value::ArrayValue(ArrayValue {
                    values: items.iter().map(any).collect(),
                }),
                other => panic!("not needed here: {other:?}"),
            };
            AnyValue { value: Some(value) }
        }
        let mut buf = Vec::new();
        for (key, value) in pairs {
            let kv = KeyValue {
                key: (*key).into(),
                value: Some(any(value)),
                ..Default::default()
            };
            prost::encoding::message::encode(9, &kv, &mut buf);
        }
        Attributes::from_encoded(buf.into(), 9, pairs.len())
    }

    #[test]
    fn wire_encoded_attributes_translate_alike() {
        let pairs = [
            ("http.request.method", s("GET")),
            ("url.path", s("/a")),
            ("server.address", s("shop")),
            ("server.port", i(8080)),
            ("http.response.status_code", i(503)),
            (
                "aws.dynamodb.table_names",
                AttributeValue::Array(vec![s("t")]),
            ),
            ("ratio", AttributeValue::Double(0.5)),
        ];
        let owned = span(SpanKind::Server, &pairs);
        let mut wire = owned.clone();
        wire.attributes = encoded(&pairs);
        wire.resource = Arc::new(Resource::new(encoded(&[("service.name", s("checkout"))])));
        assert_eq!(doc(&owned), doc(&wire));
        assert_eq!(doc(&wire)["http"]["request"]["url"], "http://shop:8080/a");
    }
}
