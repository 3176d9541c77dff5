//! The web map: the page at `/` and its assets under `/assets/`, embedded
//! from `web/` at build time, so the UI needs no network, no CDN and no
//! files beside the binary.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Scripts and styles from this origin only. The one hash is the rule
/// cytoscape injects as a `<style>` element (`position: relative` on its
/// container); the browser test fails on any violation, so a library bump
/// that changes it is noticed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-pgvDUBa4IjFA2yuSJ2cqcyxmNYJMborsd0ORcRv9vw8='; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Path under `web/`, which is also its path under `/assets/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the page loads, and the vendored libraries' licences, which
/// travel with the copies of the libraries inside the binary.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    // The page's ES modules: app.js is the entry, the rest it imports.
    asset!("app.js", JS),
    asset!("address.js", JS),
    asset!("api.js", JS),
    asset!("details.js", JS),
    asset!("diff.js", JS),
    asset!("dom.js", JS),
    asset!("draw.js", JS),
    asset!("elements.js", JS),
    asset!("format.js", JS),
    asset!("health.js", JS),
    asset!("kinds.js", JS),
    asset!("legend.js", JS),
    asset!("series.js", JS),
    asset!("state.js", JS),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/cytoscape.min.js", JS),
    asset!("vendor/cytoscape-dagre.min.js", JS),
    asset!("vendor/LICENSE.cytoscape", TEXT),
    asset!("vendor/LICENSE.cytoscape-dagre", TEXT),
    asset!("vendor/LICENSE.dagre", TEXT),
    asset!("vendor/LICENSE.graphlib", TEXT),
    asset!("vendor/README.md", "text/markdown; charset=utf-8"),
];

const INDEX: &str = "index.html";

/// Routes of the page: `/` and `/assets/{*path}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, &headers).unwrap_or_else(not_found)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // The page is `/`, not `/assets/index.html`: one address, one policy.
    if path == INDEX {
        return not_found();
    }
    serve(&path, &headers).unwrap_or_else(not_found)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The file at `path` with its validator, or 304 when the browser's copy
/// is current. `no-cache` (revalidate every time) because the files change
/// with the binary while their names stay.
fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let index = ASSETS.iter().position(|a| a.path == path)?;
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes());
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, value);
    }
    if path == INDEX {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    Some(response)
}

/// Strong validators, one per asset in `ASSETS` order, from the content,
/// computed once on first use.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{:016x}\"", fnv1a(a.body)))
            .collect()
    })
}

/// FNV-1a: stable across builds and processes, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, if_none_match: Option<&str>) -> Option<Response> {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        serve(path, &headers)
    }

    #[test]
    fn every_file_the_page_references_is_embedded() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        let referenced: Vec<&str> = html
            .split(['"', '\''])
            .filter_map(|part| part.strip_prefix("assets/"))
            .collect();
        assert!(referenced.len() >= 5, "{referenced:?}");
        for path in referenced {
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "index.html loads assets/{path}, which is not embedded"
            );
        }
    }

    /// The browser fetches each `import ... from './x.js'` itself: a module
    /// left out of `ASSETS` would break the page with a 404, and one no
    /// script imports is dead weight in the binary.
    #[test]
    fn every_module_a_script_imports_is_embedded_and_every_one_is_imported() {
        let mut imported = std::collections::BTreeSet::new();
        for script in ASSETS
            .iter()
            .filter(|a| a.content_type == JS && !a.path.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(script.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let path = line
                    .split_once("from './")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(path, _)| path)
                    .unwrap_or_else(|| panic!("{}: unexpected import {line:?}", script.path));
                assert!(
                    ASSETS
                        .iter()
                        .any(|a| a.path == path && a.content_type == JS),
                    "{} imports ./{path}, which is not embedded as JavaScript",
                    script.path
                );
                imported.insert(path);
            }
        }
        for module in ASSETS
            .iter()
            .filter(|a| a.content_type == JS && !a.path.starts_with("vendor/"))
            .filter(|a| a.path != "app.js")
        {
            assert!(
                imported.contains(module.path),
                "{} is embedded but no script imports it",
                module.path
            );
        }
        assert!(imported.len() >= 10, "{imported:?}");
    }

    #[test]
    fn assets_have_types_validators_and_the_page_a_policy() {
        let page = get(INDEX, None).unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        let js = get("vendor/cytoscape.min.js", None).unwrap();
        assert_eq!(js.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(js.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = js.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(etag.len(), 18, "{etag}");
        let again = get("vendor/cytoscape.min.js", Some(&etag)).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let stale = get("vendor/cytoscape.min.js", Some("\"0\"")).unwrap();
        assert_eq!(stale.status(), StatusCode::OK);
        assert!(get("../Cargo.toml", None).is_none());
        assert!(get("nothing.js", None).is_none());
    }

    #[test]
    fn validators_differ_by_content() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        assert_ne!(tags[0], tags[1]);
    }
}
