//! Segment and subsegment names, sanitised to what X-Ray allows.

use std::borrow::Cow;

use super::attrs::{Attrs, Field};
use crate::model::{Span, SpanKind};

/// X-Ray's limit on segment names, in characters.
pub(super) const MAX_NAME_CHARS: usize = 200;
/// Name used when sanitising leaves nothing.
pub(super) const FALLBACK_NAME: &str = "span";

/// X-Ray names a segment after its service and a subsegment after what it
/// called, so the service map shows services and their dependencies.
pub(super) fn name<'d>(
    span: &'d Span,
    attrs: &'d Attrs<'d>,
    is_segment: bool,
    aws_sdk: bool,
    remote: bool,
) -> Cow<'d, str> {
    if is_segment {
        let service = attrs
            .str(Field::AwsLocalService)
            .filter(|_| span.kind == SpanKind::Server)
            .unwrap_or_else(|| span.service_name());
        return sanitize_name(service);
    }
    let remote_service = attrs
        .str(Field::AwsRemoteService)
        .filter(|_| remote)
        .map(|name| {
            if aws_sdk {
                let name = name.strip_prefix("AWS::").unwrap_or(name);
                name.strip_prefix("AWS.SDK.").unwrap_or(name)
            } else {
                name
            }
        });
    let named = remote_service
        .or_else(|| attrs.str(Field::PeerService))
        .or_else(|| attrs.str(Field::AwsService))
        .or_else(|| attrs.str(Field::RpcService).filter(|_| aws_sdk));
    if let Some(name) = named {
        return sanitize_name(name);
    }
    match database_name(attrs) {
        Some(Cow::Borrowed(db)) => sanitize_name(db),
        Some(Cow::Owned(db)) if name_is_clean(&db) => Cow::Owned(db),
        Some(Cow::Owned(db)) => Cow::Owned(sanitize_name(&db).into_owned()),
        None => sanitize_name(
            attrs
                .str(Field::RpcService)
                .or_else(|| attrs.str(Field::HttpHost))
                .or_else(|| attrs.str(Field::ServerAddress))
                .or_else(|| attrs.str(Field::NetPeerName))
                .unwrap_or(&span.name),
        ),
    }
}

/// `<database>@<host>`, the X-Ray SDKs' convention, else the system.
pub(super) fn database_name<'d>(attrs: &'d Attrs<'d>) -> Option<Cow<'d, str>> {
    let Some(db) = attrs.str(Field::DbName) else {
        return attrs.str(Field::DbSystem).map(Cow::Borrowed);
    };
    let host = attrs
        .str(Field::DbConnectionString)
        .and_then(url_host)
        .or_else(|| attrs.str(Field::ServerAddress))
        .or_else(|| attrs.str(Field::NetPeerName));
    Some(match host {
        Some(host) => Cow::Owned(format!("{db}@{host}")),
        None => Cow::Borrowed(db),
    })
}

/// The host of `scheme://[user@]host[:port][/…]`, JDBC prefix allowed.
pub(super) fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

pub(super) fn name_char_allowed(c: char) -> bool {
    matches!(
        c,
        'a'..='z'
            | 'A'..='Z'
            | '0'..='9'
            | ' '
            | '_'
            | '.'
            | ':'
            | '/'
            | '%'
            | '&'
            | '#'
            | '='
            | '+'
            | '\\'
            | '-'
            | '@'
    ) || (!c.is_ascii() && (c.is_alphanumeric() || c.is_whitespace()))
        || c.is_ascii_whitespace()
}

pub(super) fn name_is_clean(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_CHARS && name.chars().all(name_char_allowed)
}

/// Keeps the characters X-Ray allows in names (Unicode letters, numbers,
/// whitespace and `_ . : / % & # = + \ - @`), at most 200 of them.
pub(super) fn sanitize_name(name: &str) -> Cow<'_, str> {
    if name_is_clean(name) {
        return Cow::Borrowed(name);
    }
    let clean: String = name
        .chars()
        .filter(|&c| name_char_allowed(c))
        .take(MAX_NAME_CHARS)
        .collect();
    if clean.is_empty() {
        Cow::Borrowed(FALLBACK_NAME)
    } else {
        Cow::Owned(clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::model::AttributeValue;

    #[test]
    fn names_follow_the_expected_precedence() {
        let name = |kind, pairs: &[(&str, AttributeValue)]| doc(&span(kind, pairs))["name"].clone();
        let client = SpanKind::Client;
        let all = [
            ("aws.remote.service", s("AWS::DynamoDB")),
            ("peer.service", s("payments")),
            ("aws.service", s("S3")),
            ("db.name", s("orders")),
            ("rpc.service", s("shop.Cart")),
            ("http.host", s("cart.example.com")),
            ("server.address", s("cart.internal")),
            ("net.peer.name", s("cart-peer")),
        ];
        assert_eq!(name(client, &all), "AWS::DynamoDB");
        // AWS SDK calls drop the `AWS::` prefix.
        let mut aws = all.to_vec();
        aws.push(("rpc.system", s("aws-api")));
        assert_eq!(name(client, &aws), "DynamoDB");
        assert_eq!(name(client, &all[1..]), "payments");
        assert_eq!(name(client, &all[2..]), "S3");
        assert_eq!(
            name(
                client,
                &[("rpc.system", s("aws-api")), ("rpc.service", s("SQS"))]
            ),
            "SQS"
        );
        assert_eq!(name(client, &all[3..]), "orders@cart.internal");
        assert_eq!(name(client, &[("db.system", s("redis"))]), "redis");
        assert_eq!(name(client, &all[4..]), "shop.Cart");
        assert_eq!(name(client, &all[5..]), "cart.example.com");
        assert_eq!(name(client, &all[6..]), "cart.internal");
        assert_eq!(name(client, &all[7..]), "cart-peer");
        assert_eq!(name(client, &[]), "charge card");
        // aws.remote.service names only outgoing calls.
        assert_eq!(name(SpanKind::Internal, &all[..1]), "charge card");
        // Segments are the service, whatever the peer attributes say.
        assert_eq!(name(SpanKind::Server, &all), "checkout");
        assert_eq!(
            name(
                SpanKind::Server,
                &[("aws.local.service", s("checkout-api"))]
            ),
            "checkout-api"
        );
    }

    #[test]
    fn names_are_sanitised_and_bounded() {
        let named = |name: &str| {
            let mut span = span(SpanKind::Internal, &[]);
            span.name = name.into();
            doc(&span)["name"].as_str().unwrap().to_owned()
        };
        assert_eq!(named("GET /orders/{id}?q=<x>"), "GET /orders/idq=x");
        assert_eq!(
            named("a\\b@c:d_e.f%g&h#i=j+k-l"),
            "a\\b@c:d_e.f%g&h#i=j+k-l"
        );
        assert_eq!(named("Zahlung für №5 東京"), "Zahlung für 5 東京");
        assert_eq!(named("{}()*"), "span");
        let long = named(&"é".repeat(250));
        assert_eq!(long.chars().count(), 200);
        assert_eq!(named(&"x".repeat(200)).len(), 200);
        // Segment names too.
        let mut server = span(SpanKind::Server, &[]);
        server.resource = resource(&[("service.name", s("shop<prod>"))]);
        assert_eq!(doc(&server)["name"], "shopprod");
    }
}
