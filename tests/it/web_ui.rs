//! The web map is served by the real binary: the page at `/`, every file it
//! loads under `/assets/`, with their types and a content security policy.
//! What the page draws is checked in a real browser by `tests/browser/`.

use crate::support as common;

use common::Collector;

#[tokio::test]
async fn the_page_and_everything_it_loads_are_served_from_the_binary() {
    let collector = Collector::start();
    let page = reqwest::get(collector.api_url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>tracemap"), "{html}");

    let mut loaded = 0;
    for part in html.split('"') {
        let Some(path) = part.strip_prefix("assets/") else {
            continue;
        };
        let response = reqwest::get(collector.api_url(&format!("/assets/{path}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "assets/{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset type {other:?} for {path}"),
        };
        assert!(content_type.starts_with(expected), "{path}: {content_type}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path} empty");
        loaded += 1;
    }
    // favicon (twice), stylesheet, cytoscape, cytoscape-dagre, app.js
    assert_eq!(loaded, 6, "assets referenced by the page: {html}");

    for missing in [
        "/assets/nothing.js",
        "/assets/../Cargo.toml",
        "/assets/index.html",
    ] {
        let response = reqwest::get(collector.api_url(missing)).await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
    }
    // The page's own API still answers beside it.
    let graph = reqwest::get(collector.api_url("/api/v1/graph?window=5m"))
        .await
        .unwrap();
    assert_eq!(graph.status(), 200);
}
