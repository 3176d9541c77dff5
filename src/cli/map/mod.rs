//! `tracemap map`: the service map of a running collector, in a terminal.
//!
//! The command is a thin client of the API's `/api/v1/graph` family: `dot`,
//! `mermaid` and `json` print what the server renders, and `table` turns the
//! JSON graph into an edge table and a per-service summary. With `--diff`
//! it reads `/api/v1/diff` instead and prints what changed against a
//! baseline window. Rendering is pure (a [`Graph`] or [`Diff`] in, a
//! `String` out) so it is tested without a network.

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::time::Duration;

mod table;

use clap::{Args, ValueEnum};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use table::truncate;
pub use table::{render_diff, render_table};

/// Environment twin of `--url`: the base URL of the collector's API.
pub const ENV_MAP_URL: &str = "TRACEMAP_MAP_URL";

/// Where `tracemap run` serves its API by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The window asked for when `--window` is absent; shorter than the API's own
/// default because a terminal view is about what happens now.
pub const DEFAULT_WINDOW: &str = "5m";

/// Lines of the table stay within this many columns.
const MAX_WIDTH: usize = 120;

/// A server's error body is shown up to this many characters; an HTML error
/// page from a proxy would otherwise flood the terminal.
const MAX_MESSAGE_CHARS: usize = 400;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Arguments of `tracemap map`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct MapArgs {
    /// Base URL of the collector's API; `http://` is assumed when no scheme is given
    /// [env: TRACEMAP_MAP_URL] [default: http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How far back to look, such as `30s`, `5m` or `2h` [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: MapFormat,
    /// Start of a past window, RFC 3339 such as `2026-01-02T15:04:05Z`; ends at --end, or now.
    #[arg(long, value_name = "RFC3339")]
    pub start: Option<String>,
    /// End of a past window, RFC 3339; starts at --start, or --window before it.
    #[arg(long, value_name = "RFC3339")]
    pub end: Option<String>,
    /// When to colour high error rates; `auto` colours only when standard output is a terminal.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t)]
    pub color: ColorChoice,
    /// Compare with a baseline window of the same length: an offset back
    /// such as `1d` or `2h`, or its start in RFC 3339 (a deploy time).
    /// Tables mark new (+), vanished (-) and regressed (!) edges; other
    /// formats print the diff API's JSON.
    #[arg(long, value_name = "BASELINE")]
    pub diff: Option<String>,
}

/// Output formats of `tracemap map`.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MapFormat {
    /// Edges and services as aligned text.
    #[default]
    Table,
    /// Graphviz DOT, as the API renders it.
    Dot,
    /// A Mermaid flowchart, as the API renders it.
    Mermaid,
    /// The API's JSON graph, pretty-printed.
    Json,
}

/// When to colour output.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when standard output is a terminal.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Why `tracemap map` failed.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The URL does not parse or is not plain http.
    #[error("invalid api url {url:?}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing answered at the URL.
    #[error(
        "cannot reach the tracemap api at {url}; start a collector with `tracemap run`, \
         or `tracemap demo` for one with sample traffic"
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// The connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The request failed after connecting, or the HTTP client could not be built.
    #[error("request to {url} failed")]
    Request {
        /// The URL requested.
        url: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error status.
    #[error("{url} answered {status}{}", display_message(.message))]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The server's explanation, possibly empty.
        message: String,
    },
    /// The API answered 200 with a body that is not the graph.
    #[error("unexpected response from {url}")]
    Decode {
        /// The URL requested.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the output failed.
    #[error("writing the map")]
    Write(#[from] std::io::Error),
}

fn display_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The documents of the graph API, shared with the server.
pub use tracemap::web::document::{
    DiffDocument as Diff, DiffEdge, DiffSide, Edge, GraphDocument as Graph, Latency, Node,
};

impl MapArgs {
    /// The API base URL: `--url`, else `TRACEMAP_MAP_URL` read through `lookup`,
    /// else [`DEFAULT_URL`]; empty values count as unset.
    pub fn base_url(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        self.url
            .clone()
            .filter(|url| !url.is_empty())
            .or_else(|| lookup(ENV_MAP_URL).filter(|url| !url.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    /// Query parameters for the graph endpoints. The server resolves them:
    /// `end` defaults to now and `start` to `window` before `end`, so the
    /// window is sent whenever it may matter.
    fn query(&self) -> Vec<(&'static str, &str)> {
        let mut query = Vec::with_capacity(3);
        if let Some(start) = &self.start {
            query.push(("start", start.as_str()));
        }
        if let Some(end) = &self.end {
            query.push(("end", end.as_str()));
        }
        match (&self.window, &self.start, &self.end) {
            (Some(window), _, _) => query.push(("window", window.as_str())),
            (None, Some(_), Some(_)) => {}
            (None, _, _) => query.push(("window", DEFAULT_WINDOW)),
        }
        query
    }

    /// How the window reads in prose, for the table's header and empty message.
    fn window_label(&self, graph: &Graph) -> String {
        if self.start.is_some() || self.end.is_some() {
            format!("between {} and {}", graph.window.start, graph.window.end)
        } else {
            format!(
                "in the last {}",
                self.window.as_deref().unwrap_or(DEFAULT_WINDOW)
            )
        }
    }
}

/// Fetches the service map and writes it to `out` in the chosen format.
pub async fn run(args: MapArgs, out: &mut impl std::io::Write) -> Result<(), MapError> {
    let base_url = args.base_url(|name| std::env::var(name).ok());
    let base = parse_base_url(&base_url)?;
    let client = http_client(&base).map_err(|source| MapError::Request {
        url: base_url.clone(),
        source,
    })?;
    let colour = match args.color {
        ColorChoice::Auto => std::io::stdout().is_terminal(),
        ColorChoice::Always => true,
        ColorChoice::Never => false,
    };
    let path = match (args.format, &args.diff) {
        (_, Some(_)) => "/api/v1/diff",
        (MapFormat::Table | MapFormat::Json, None) => "/api/v1/graph",
        (MapFormat::Dot, None) => "/api/v1/graph.dot",
        (MapFormat::Mermaid, None) => "/api/v1/graph.mermaid",
    };
    let mut query = args.query();
    if let Some(baseline) = &args.diff {
        query.push(baseline_param(baseline));
    }
    let url = endpoint(&base, path, &query);
    let body = fetch(&client, &base_url, url.clone()).await?;

    let text = match (args.format, &args.diff) {
        (MapFormat::Table, Some(_)) => {
            let diff: Diff = serde_json::from_str(&body).map_err(|source| MapError::Decode {
                url: url.to_string(),
                source,
            })?;
            render_diff(&diff, colour)
        }
        (_, Some(_)) => {
            serde_json::from_str::<serde::de::IgnoredAny>(&body).map_err(|source| {
                MapError::Decode {
                    url: url.to_string(),
                    source,
                }
            })?;
            pretty_json(&body)
        }
        (format, None) => match format {
            MapFormat::Dot | MapFormat::Mermaid => with_final_newline(body),
            MapFormat::Json => {
                serde_json::from_str::<serde::de::IgnoredAny>(&body).map_err(|source| {
                    MapError::Decode {
                        url: url.to_string(),
                        source,
                    }
                })?;
                pretty_json(&body)
            }
            MapFormat::Table => {
                let graph: Graph =
                    serde_json::from_str(&body).map_err(|source| MapError::Decode {
                        url: url.to_string(),
                        source,
                    })?;
                render_table(&graph, &args.window_label(&graph), colour)
            }
        },
    };
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `tracemap map | head` closing the pipe early is not a failure.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(MapError::Write),
    }
}

/// The diff API's parameter for `--diff`: a time is the baseline's start,
/// anything else an offset (the server names it if it does not parse).
fn baseline_param(baseline: &str) -> (&'static str, &str) {
    if humantime::parse_rfc3339_weak(baseline).is_ok() {
        ("baseline_start", baseline)
    } else {
        ("baseline_offset", baseline)
    }
}

/// Parses the base URL, assuming `http://` when the scheme is missing, since
/// `localhost:8080` would otherwise parse as a URL with scheme `localhost`.
fn parse_base_url(raw: &str) -> Result<Url, MapError> {
    let invalid = |source: Box<dyn std::error::Error + Send + Sync>| MapError::InvalidUrl {
        url: raw.to_owned(),
        source,
    };
    let with_scheme: Cow<'_, str> = if raw.contains("://") {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(format!("http://{raw}"))
    };
    let url = Url::parse(&with_scheme).map_err(|err| invalid(Box::new(err)))?;
    // reqwest is built without TLS, and would report https as unreachable.
    if url.scheme() == "https" {
        return Err(invalid(
            "https is not supported; reach the api over http, such as through `kubectl port-forward`"
                .into(),
        ));
    }
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err(invalid(
            "expected an http url such as http://127.0.0.1:8080".into(),
        ));
    }
    Ok(url)
}

fn http_client(base: &Url) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("tracemap/", env!("CARGO_PKG_VERSION")));
    // An HTTP_PROXY set for the outside world cannot reach this machine's
    // loopback listener, where the collector usually is.
    if is_loopback(base) {
        builder = builder.no_proxy();
    }
    builder.build()
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `base` with `path` appended to its own path, so a collector behind a
/// path-prefixing proxy (`http://host/tracemap`) works too.
fn endpoint(base: &Url, path: &str, query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(None);
    url.set_fragment(None);
    url.query_pairs_mut().extend_pairs(query);
    url
}

async fn fetch(client: &reqwest::Client, base_url: &str, url: Url) -> Result<String, MapError> {
    let shown = url.to_string();
    let response = client.get(url).send().await.map_err(|source| {
        if source.is_connect() {
            MapError::Unreachable {
                url: base_url.to_owned(),
                source,
            }
        } else {
            MapError::Request {
                url: shown.clone(),
                source,
            }
        }
    })?;
    let status = response.status();
    let body = response.text().await.map_err(|source| MapError::Request {
        url: shown.clone(),
        source,
    })?;
    if !status.is_success() {
        return Err(MapError::Status {
            url: shown,
            status,
            message: server_message(&body),
        });
    }
    Ok(body)
}

/// The server's explanation from an error body: the `error` or `message`
/// field of a JSON object, or else the text itself, shortened.
fn server_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<String>,
        message: Option<String>,
    }
    let message = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|parsed| parsed.error.or(parsed.message))
        .unwrap_or_else(|| body.trim().to_owned());
    truncate(&message, MAX_MESSAGE_CHARS).into_owned()
}

fn with_final_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Indents valid JSON two spaces a level, keeping the server's key order,
/// which a round trip through `serde_json::Value` would sort.
fn pretty_json(raw: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    }
    let is_space = |c: &char| matches!(c, ' ' | '\t' | '\n' | '\r');

    let mut out = String::with_capacity(raw.len() * 2);
    let mut chars = raw.chars().peekable();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(is_space).is_some() {}
                if let Some(close) = chars.next_if(|c| matches!(c, '}' | ']')) {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if is_space(&c) => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
