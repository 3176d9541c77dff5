//! The `http` object: request and response, the URL built from its parts.

use std::borrow::Cow;

use super::attrs::{Attrs, Field, Used};
use super::document::{Http, HttpRequest, HttpResponse};
use crate::model::{Span, SpanKind};

pub(super) fn make_http<'d>(
    span: &Span,
    attrs: &'d Attrs<'d>,
    is_segment: bool,
    used: &mut Used,
) -> Option<Http<'d>> {
    use Field::*;
    let method = attrs.str(HttpMethod);
    let status = attrs.int(HttpStatus);
    let full_url = attrs.str(HttpUrl);
    let user_agent = attrs.str(HttpUserAgent);
    let has_http = method.is_some()
        || status.is_some()
        || full_url.is_some()
        || user_agent.is_some()
        || [HttpScheme, HttpTarget, UrlPath, UrlQuery, HttpClientIp]
            .into_iter()
            .any(|f| attrs.value(f).is_some());
    if !has_http {
        return None;
    }
    for field in [
        HttpMethod,
        HttpStatus,
        HttpUrl,
        HttpUserAgent,
        HttpScheme,
        HttpTarget,
        UrlPath,
        UrlQuery,
        HttpContentLength,
        // The parts of the URL, as the awsxray exporter takes them: kept out
        // of metadata whether or not the URL had to be built from them.
        HttpHost,
        HttpServerName,
        ServerAddress,
        ServerPort,
        NetHostName,
        NetHostPort,
        NetPeerName,
        NetPeerPort,
    ] {
        used.add(field);
    }
    let url = full_url
        .map(Cow::Borrowed)
        .or_else(|| build_url(span.kind == SpanKind::Server, attrs, used));

    let mut request = HttpRequest {
        method,
        url,
        user_agent,
        ..HttpRequest::default()
    };
    // The caller's address is a segment field; `x_forwarded_for` says it
    // came from a header rather than the connection.
    if is_segment {
        let peer_field = [NetworkPeerAddress, NetPeerIp]
            .into_iter()
            .find(|&field| attrs.str(field).is_some());
        let peer = peer_field.and_then(|field| attrs.str(field));
        if let Some(ip) = attrs.str(HttpClientIp) {
            used.add(HttpClientIp);
            request.client_ip = Some(ip);
            request.x_forwarded_for = true;
        } else if let Some(ip) = attrs.str(ClientAddress) {
            used.add(ClientAddress);
            request.client_ip = Some(ip);
            request.x_forwarded_for = peer != Some(ip);
        } else if let (Some(ip), Some(field)) = (peer, peer_field) {
            used.add(field);
            request.client_ip = Some(ip);
        }
    }
    Some(Http {
        request,
        response: HttpResponse {
            status,
            content_length: attrs.int(HttpContentLength),
        },
    })
}

/// `scheme://host[:port]target` from the parts the semantic conventions
/// give when the full URL is absent.
pub(super) fn build_url<'d>(
    server: bool,
    attrs: &'d Attrs<'d>,
    used: &mut Used,
) -> Option<Cow<'d, str>> {
    use Field::*;
    let (host, port_field) = if let Some(host) = attrs.str(HttpHost) {
        // `http.host` is the Host header, port included.
        used.add(HttpHost);
        (host, None)
    } else {
        let hosts: &[(Field, Field)] = if server {
            &[
                (ServerAddress, ServerPort),
                (HttpServerName, NetHostPort),
                (NetHostName, NetHostPort),
            ]
        } else {
            &[
                (ServerAddress, ServerPort),
                (NetPeerName, NetPeerPort),
                (NetPeerIp, NetPeerPort),
            ]
        };
        let (host, port) = hosts
            .iter()
            .find_map(|&(host, port)| Some((host, attrs.str(host)?, port)))
            .map(|(field, host, port)| {
                used.add(field);
                (host, port)
            })?;
        (host, Some(port))
    };
    let scheme = attrs.str(HttpScheme).unwrap_or("http");
    let port = port_field.and_then(|field| {
        let port = attrs.port(field)?;
        used.add(field);
        let default = matches!((scheme, &*port), ("http", "80") | ("https", "443"));
        (!default).then_some(port)
    });
    let mut url = String::with_capacity(64);
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    if let Some(port) = port {
        url.push(':');
        url.push_str(&port);
    }
    if let Some(target) = attrs.str(HttpTarget) {
        url.push_str(target);
    } else {
        url.push_str(attrs.str(UrlPath).unwrap_or("/"));
        if let Some(query) = attrs.str(UrlQuery) {
            if !query.starts_with('?') {
                url.push('?');
            }
            url.push_str(query);
        }
    }
    Some(Cow::Owned(url))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::exporter::xray::segment::tests::*;
    use crate::model::SpanKind;

    #[test]
    fn http_old_semantic_conventions_server() {
        let server = span(
            SpanKind::Server,
            &[
                ("http.method", s("GET")),
                ("http.scheme", s("https")),
                ("http.host", s("shop.example.com")),
                ("http.target", s("/cart?id=1")),
                ("http.status_code", i(200)),
                ("http.user_agent", s("curl/8.0")),
                ("http.client_ip", s("203.0.113.9")),
                ("net.peer.ip", s("10.0.0.7")),
                ("http.response_content_length", i(512)),
                ("app.tier", s("gold")),
            ],
        );
        let doc = doc(&server);
        assert_eq!(
            doc["http"],
            json!({
                "request": {"method": "GET", "url": "https://shop.example.com/cart?id=1",
                            "user_agent": "curl/8.0", "client_ip": "203.0.113.9",
                            "x_forwarded_for": true},
                "response": {"status": 200, "content_length": 512}
            })
        );
        assert_eq!(
            doc["metadata"]["default"],
            json!({"net.peer.ip": "10.0.0.7", "app.tier": "gold",
                   "otel.resource.service.name": "checkout"})
        );

        let by_parts = span(
            SpanKind::Server,
            &[
                ("http.method", s("PUT")),
                ("http.target", s("/x")),
                ("net.host.name", s("api")),
                ("net.host.port", i(8080)),
                ("net.peer.ip", s("10.0.0.7")),
            ],
        );
        assert_eq!(
            self::doc(&by_parts)["http"],
            json!({"request": {"method": "PUT", "url": "http://api:8080/x", "client_ip": "10.0.0.7"}})
        );
    }

    #[test]
    fn http_old_semantic_conventions_client() {
        let client = span(
            SpanKind::Client,
            &[
                ("http.method", s("POST")),
                ("http.url", s("https://api.example.com/health")),
                ("http.status_code", s("503")),
                ("net.peer.name", s("api.example.com")),
                ("http.client_ip", s("1.2.3.4")),
            ],
        );
        let doc = doc(&client);
        assert_eq!(doc["name"], "api.example.com");
        // client_ip and x_forwarded_for are segment fields.
        assert_eq!(
            doc["http"],
            json!({"request": {"method": "POST", "url": "https://api.example.com/health"},
                   "response": {"status": 503}})
        );
        let by_parts = span(
            SpanKind::Client,
            &[
                ("http.method", s("GET")),
                ("http.scheme", s("https")),
                ("net.peer.name", s("api")),
                ("net.peer.port", s("443")),
                ("http.target", s("/v1")),
            ],
        );
        assert_eq!(
            self::doc(&by_parts)["http"]["request"]["url"],
            "https://api/v1"
        );
    }

    #[test]
    fn http_current_semantic_conventions() {
        let server = span(
            SpanKind::Server,
            &[
                ("http.request.method", s("POST")),
                ("url.scheme", s("https")),
                ("server.address", s("shop.example.com")),
                ("server.port", i(443)),
                ("url.path", s("/orders")),
                ("url.query", s("page=2")),
                ("user_agent.original", s("okhttp/4")),
                ("client.address", s("198.51.100.4")),
                ("network.peer.address", s("10.0.0.8")),
                ("http.response.status_code", i(201)),
                ("http.response.body.size", i(42)),
                ("http.route", s("/orders")),
            ],
        );
        let out = doc(&server);
        assert_eq!(
            out["http"],
            json!({
                "request": {"method": "POST", "url": "https://shop.example.com/orders?page=2",
                            "user_agent": "okhttp/4", "client_ip": "198.51.100.4",
                            "x_forwarded_for": true},
                "response": {"status": 201, "content_length": 42}
            })
        );
        assert_eq!(
            out["metadata"]["default"],
            json!({"network.peer.address": "10.0.0.8", "http.route": "/orders",
                   "otel.resource.service.name": "checkout"})
        );
        // The client address is the connection's: not forwarded.
        let direct = span(
            SpanKind::Server,
            &[
                ("http.request.method", s("GET")),
                ("client.address", s("10.0.0.8")),
                ("network.peer.address", s("10.0.0.8")),
            ],
        );
        assert_eq!(
            doc(&direct)["http"]["request"],
            json!({"method": "GET", "client_ip": "10.0.0.8"})
        );

        let client = span(
            SpanKind::Client,
            &[
                ("http.request.method", s("GET")),
                ("url.full", s("http://inventory:8080/items/7")),
                ("server.address", s("inventory")),
                ("server.port", i(8080)),
                ("http.response.status_code", i(200)),
            ],
        );
        let out = doc(&client);
        assert_eq!(out["name"], "inventory");
        assert_eq!(
            out["http"],
            json!({"request": {"method": "GET", "url": "http://inventory:8080/items/7"},
                   "response": {"status": 200}})
        );
        // The URL's parts are in the URL, not repeated in metadata.
        assert!(out.get("metadata").is_none(), "{out}");
    }
}
