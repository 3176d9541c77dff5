//! The `aws` object (per call, and a segment's resource) and `origin`.

use super::attrs::{Attrs, Field, Used};
use super::document::{Aws, Beanstalk, Ec2, Ecs, Eks, LogGroup, XrayInfo};

/// The per-call `aws` fields.
pub(super) fn make_span_aws<'d>(attrs: &'d Attrs<'d>, aws_sdk: bool, used: &mut Used) -> Aws<'d> {
    use Field::*;
    let mut take = |field: Field| {
        let value = attrs.str(field);
        if value.is_some() {
            used.add(field);
        }
        value
    };
    let mut aws = Aws {
        account_id: take(AwsAccount),
        operation: take(AwsOperation),
        region: take(AwsRegion),
        request_id: take(AwsRequestId),
        queue_url: take(AwsQueueUrl),
        table_name: take(AwsTableName),
        ..Aws::default()
    };
    let sqs = aws_sdk
        || matches!(
            attrs.str(MessagingSystem),
            Some("aws_sqs" | "aws.sqs" | "AmazonSQS")
        );
    if aws.queue_url.is_none() && sqs {
        aws.queue_url = take(MessagingUrl);
    }
    if aws_sdk {
        if aws.operation.is_none() {
            aws.operation = take(RpcMethod);
        }
        if aws.region.is_none() {
            aws.region = take(CloudRegion);
        }
    }
    let tables = attrs.strs(DynamoDbTableNames);
    if !tables.is_empty() {
        used.add(DynamoDbTableNames);
        match tables[..] {
            [one] => aws.table_name = Some(one),
            _ => {
                aws.table_name = None;
                aws.table_names = tables;
            }
        }
    }
    aws
}

/// `origin` from the resource's platform, as the X-Ray SDK plugins set it.
pub(super) fn aws_origin(resource: &Attrs<'_>) -> Option<&'static str> {
    Some(match resource.str(Field::CloudPlatform)? {
        "aws_eks" => "AWS::EKS::Container",
        "aws_ec2" => "AWS::EC2::Instance",
        "aws_elastic_beanstalk" => "AWS::ElasticBeanstalk::Environment",
        "aws_app_runner" => "AWS::AppRunner::Service",
        "aws_ecs" => match resource.str(Field::EcsLaunchType) {
            Some("ec2") => "AWS::ECS::EC2",
            Some("fargate") => "AWS::ECS::Fargate",
            _ => "AWS::ECS::Container",
        },
        _ => return None,
    })
}

/// The segment-only `aws` fields, from the resource.
pub(super) fn add_resource_aws<'d>(
    resource: &'d Attrs<'d>,
    sdk: Option<&'d str>,
    aws: &mut Aws<'d>,
) {
    use Field::*;
    let platform = resource.str(CloudPlatform);
    let zone = resource.str(CloudZone);
    if aws.account_id.is_none() {
        aws.account_id = resource.str(CloudAccount);
    }
    if platform == Some("aws_ec2") || resource.str(HostId).is_some() {
        aws.ec2 = Some(Ec2 {
            instance_id: resource.str(HostId),
            availability_zone: zone,
            instance_size: resource.str(HostType),
            ami_id: resource.str(HostImageId),
        });
    }
    if platform == Some("aws_ecs") {
        aws.ecs = Some(Ecs {
            container: resource.str(ContainerName),
            container_id: resource.str(ContainerId),
            task_arn: resource.str(EcsTaskArn),
            task_family: resource.str(EcsTaskFamily),
            cluster_arn: resource.str(EcsClusterArn),
            container_arn: resource.str(EcsContainerArn),
            availability_zone: zone,
            launch_type: resource.str(EcsLaunchType),
        });
    }
    if platform == Some("aws_eks") || resource.str(K8sCluster).is_some() {
        aws.eks = Some(Eks {
            cluster_name: resource.str(K8sCluster),
            pod: resource.str(K8sPod),
            container_id: resource.str(ContainerId),
        });
    }
    if platform == Some("aws_elastic_beanstalk")
        && let Some(deployment) = resource.str(ServiceInstance)
    {
        aws.elastic_beanstalk = Some(Beanstalk {
            environment_name: resource.str(ServiceNamespace),
            version_label: resource.str(ServiceVersion),
            deployment_id: deployment.parse().unwrap_or(0),
        });
    }
    let arns = resource.strs(LogGroupArns);
    aws.cloudwatch_logs = if arns.is_empty() {
        resource
            .strs(LogGroupNames)
            .into_iter()
            .map(|log_group| LogGroup {
                log_group,
                arn: None,
            })
            .collect()
    } else {
        // arn:aws:logs:region:account:log-group:NAME[:*]
        arns.into_iter()
            .map(|arn| LogGroup {
                log_group: arn.split(':').nth(6).unwrap_or(arn),
                arn: Some(arn),
            })
            .collect()
    };
    if let Some(sdk) = sdk {
        aws.xray = Some(XrayInfo {
            sdk,
            sdk_version: resource.str(SdkVersion),
            auto_instrumentation: resource.str(AutoVersion).is_some(),
        });
    }
}

/// Whether `name` ends with ` for <language>`, ignoring ASCII case.
pub(super) fn names_language(name: &str, language: &str) -> bool {
    const FOR: &[u8] = b" for ";
    let (name, language) = (name.as_bytes(), language.as_bytes());
    name.len() >= FOR.len() + language.len() && {
        let (head, tail) = name.split_at(name.len() - language.len());
        tail.eq_ignore_ascii_case(language)
            && head[head.len() - FOR.len()..].eq_ignore_ascii_case(FOR)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::exporter::xray::segment::tests::*;
    use crate::model::{AttributeValue, SpanKind};

    #[test]
    fn aws_call_fields() {
        let dynamo = span(
            SpanKind::Client,
            &[
                ("rpc.system", s("aws-api")),
                ("rpc.service", s("DynamoDB")),
                ("rpc.method", s("GetItem")),
                ("cloud.region", s("eu-west-1")),
                ("aws.request_id", s("R1")),
                (
                    "aws.dynamodb.table_names",
                    AttributeValue::Array(vec![s("orders")]),
                ),
                ("http.response.status_code", i(200)),
            ],
        );
        let out = doc(&dynamo);
        assert_eq!(out["name"], "DynamoDB");
        assert_eq!(out["namespace"], "aws");
        assert_eq!(
            out["aws"],
            json!({"operation": "GetItem", "region": "eu-west-1", "request_id": "R1",
                   "table_name": "orders"})
        );
        assert_eq!(out["http"], json!({"response": {"status": 200}}));

        let batch = span(
            SpanKind::Client,
            &[
                ("rpc.system", s("aws-api")),
                (
                    "aws.dynamodb.table_names",
                    AttributeValue::Array(vec![s("a"), s("b")]),
                ),
            ],
        );
        assert_eq!(doc(&batch)["aws"], json!({"table_names": ["a", "b"]}));

        let sqs = span(
            SpanKind::Producer,
            &[
                ("rpc.system", s("aws-api")),
                ("rpc.service", s("Sqs")),
                ("rpc.method", s("SendMessage")),
                (
                    "aws.sqs.queue.url",
                    s("https://sqs.eu-west-1.amazonaws.com/1/q"),
                ),
                ("aws.requestId", s("R2")),
            ],
        );
        assert_eq!(
            doc(&sqs)["aws"],
            json!({"operation": "SendMessage", "request_id": "R2",
                   "queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"})
        );
        let legacy = span(
            SpanKind::Client,
            &[
                ("aws.service", s("S3")),
                ("aws.operation", s("PutObject")),
                ("aws.region", s("us-east-1")),
                ("aws.account_id", s("123456789012")),
            ],
        );
        let out = doc(&legacy);
        assert_eq!(
            (out["name"].as_str(), out["namespace"].as_str()),
            (Some("S3"), Some("aws"))
        );
        assert_eq!(
            out["aws"],
            json!({"account_id": "123456789012", "operation": "PutObject", "region": "us-east-1"})
        );
        // rpc.method names an AWS operation only for AWS SDK calls.
        let grpc = span(
            SpanKind::Client,
            &[("rpc.system", s("grpc")), ("rpc.method", s("Get"))],
        );
        assert!(doc(&grpc).get("aws").is_none());
    }

    #[test]
    fn eks_resource_gives_origin_and_aws_eks_on_segments() {
        let mut server = span(SpanKind::Server, &[]);
        server.resource = eks_resource();
        let out = doc(&server);
        assert_eq!(out["origin"], "AWS::EKS::Container");
        assert_eq!(
            out["aws"],
            json!({
                "account_id": "123456789012",
                "ec2": {"instance_id": "i-0abc", "availability_zone": "eu-west-1a"},
                "eks": {"cluster_name": "prod", "pod": "checkout-7d9", "container_id": "abc123"},
                "xray": {"sdk": "opentelemetry for java", "sdk_version": "1.40.0",
                         "auto_instrumentation": true}
            })
        );
        assert_eq!(out["service"], json!({"version": "1.4.2"}));
        let metadata = out["metadata"]["default"].as_object().unwrap();
        assert_eq!(metadata.len(), 14);
        assert_eq!(metadata["otel.resource.k8s.cluster.name"], "prod");

        // Subsegments leave the resource to their segment.
        let mut client = span(SpanKind::Client, &[]);
        client.resource = eks_resource();
        let out = doc(&client);
        for field in ["origin", "aws", "service", "metadata"] {
            assert!(out.get(field).is_none(), "{field}");
        }
    }

    #[test]
    fn origin_by_platform() {
        let origin = |pairs: &[(&str, AttributeValue)]| {
            let mut server = span(SpanKind::Server, &[]);
            server.resource = resource(pairs);
            doc(&server)["origin"].clone()
        };
        let platform = |p: &str| ("cloud.platform", s(p));
        assert_eq!(origin(&[platform("aws_ec2")]), "AWS::EC2::Instance");
        assert_eq!(
            origin(&[platform("aws_ecs"), ("aws.ecs.launchtype", s("fargate"))]),
            "AWS::ECS::Fargate"
        );
        assert_eq!(
            origin(&[platform("aws_ecs"), ("aws.ecs.launchtype", s("ec2"))]),
            "AWS::ECS::EC2"
        );
        assert_eq!(origin(&[platform("aws_ecs")]), "AWS::ECS::Container");
        assert_eq!(
            origin(&[platform("aws_elastic_beanstalk")]),
            "AWS::ElasticBeanstalk::Environment"
        );
        assert_eq!(origin(&[platform("aws_lambda")]), Value::Null);
        // Another cloud: no AWS origin nor aws.eks, even with a cluster name.
        let mut server = span(SpanKind::Server, &[]);
        server.resource = resource(&[
            ("cloud.provider", s("gcp")),
            ("cloud.platform", s("gcp_kubernetes_engine")),
            ("k8s.cluster.name", s("prod")),
        ]);
        let out = doc(&server);
        assert!(out.get("origin").is_none() && out.get("aws").is_none());
    }
}
