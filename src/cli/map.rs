//! `tracemap map`: the service map of a running collector, in a terminal.
//!
//! The command is a thin client of the API's `/api/v1/graph` family: `dot`,
//! `mermaid` and `json` print what the server renders, and `table` turns the
//! JSON graph into an edge table and a per-service summary. With `--diff`
//! it reads `/api/v1/diff` instead and prints what changed against a
//! baseline window. Rendering is pure (a [`Graph`] or [`Diff`] in, a
//! `String` out) so it is tested without a network.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tracemap::web::health::ERROR_RATE_CRITICAL;
use tracemap::web::render::format_ms;

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

/// Renders the edge table, then the per-service summary, within 120
/// columns. `window` reads like "in the last 5m".
pub fn render_table(graph: &Graph, window: &str, colour: bool) -> String {
    let mut out = String::new();
    if graph.edges.is_empty() {
        out.push_str(&truncate(&format!("no edges {window}"), MAX_WIDTH));
        out.push('\n');
    } else {
        let header = format!(
            "service map {window} ({} → {}): {} nodes, {} edges",
            graph.window.start,
            graph.window.end,
            graph.nodes.len(),
            graph.edges.len()
        );
        out.push_str(&truncate(&header, MAX_WIDTH));
        out.push_str("\n\n");
        render_edges(&mut out, &graph.edges, colour);
    }
    if !graph.nodes.is_empty() {
        out.push('\n');
        render_nodes(&mut out, &graph.nodes, colour);
    }
    out
}

/// Order of changes in the table, worst first, and their markers.
const CHANGES: [(&str, &str); 5] = [
    ("regressed", "!"),
    ("new", "+"),
    ("vanished", "-"),
    ("improved", " "),
    ("unchanged", " "),
];

const CHANGE_W: usize = 9;
const WHY_W: usize = 7;

/// Renders a diff as a table within 120 columns: a marker column (`!`
/// regressed, `+` new, `-` vanished), then each edge's numbers now and in
/// the baseline, worst changes first.
pub fn render_diff(diff: &Diff, colour: bool) -> String {
    let rank = |change: &str| {
        CHANGES
            .iter()
            .position(|(c, _)| *c == change)
            .unwrap_or(CHANGES.len())
    };
    let mut edges: Vec<&DiffEdge> = diff.edges.iter().collect();
    let requests = |e: &DiffEdge| e.current.or(e.baseline).map_or(0, |s| s.requests);
    edges.sort_by(|a, b| {
        rank(&a.change)
            .cmp(&rank(&b.change))
            .then_with(|| requests(b).cmp(&requests(a)))
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.target.cmp(&b.target))
    });
    let counts: Vec<String> = CHANGES
        .iter()
        .map(|(change, _)| {
            let n = edges.iter().filter(|e| e.change == *change).count();
            format!("{n} {change}")
        })
        .collect();
    let mut out = String::new();
    let header = format!(
        "changes {} → {} against {} → {}",
        diff.window.start, diff.window.end, diff.baseline.start, diff.baseline.end,
    );
    out.push_str(&truncate(&header, MAX_WIDTH));
    out.push('\n');
    out.push_str(&counts.join(", "));
    out.push('\n');
    if edges.is_empty() {
        out.push_str("no edges in either window\n");
        return out;
    }
    out.push('\n');
    let fixed = 1
        + GAP.len()
        + CHANGE_W
        + GAP.len()
        + ARROW.chars().count()
        + GAP.len()
        + TYPE_W
        + 2 * (GAP.len() + REQ_W - 1)
        + 2 * (GAP.len() + ERR_W)
        + 2 * (GAP.len() + LAT_W)
        + GAP.len()
        + WHY_W;
    let (client_w, server_w) = split_width(
        widest("CLIENT", edges.iter().map(|e| e.source.as_str())),
        widest("SERVER", edges.iter().map(|e| e.target.as_str())),
        MAX_WIDTH - fixed,
    );
    let req_w = REQ_W - 1;
    let _ = writeln!(
        out,
        " {GAP}{:<CHANGE_W$}{GAP}{:<client_w$}{}{:<server_w$}{GAP}{:<TYPE_W$}{GAP}{:>req_w$}{GAP}{:>req_w$}\
         {GAP}{:>ERR_W$}{GAP}{:>ERR_W$}{GAP}{:>LAT_W$}{GAP}{:>LAT_W$}{GAP}WHY",
        "CHANGE",
        "CLIENT",
        " ".repeat(ARROW.chars().count()),
        "SERVER",
        "TYPE",
        "REQ",
        "BEFORE",
        "ERR%",
        "BEFORE",
        "p99",
        "BEFORE",
    );
    let cells = |side: Option<DiffSide>| match side {
        None => ("-".to_owned(), format!("{:>ERR_W$}", "-"), "-".to_owned()),
        Some(s) => (
            format_count(s.requests),
            error_cell(s.requests, s.error_rate, false),
            if s.requests == 0 {
                "-".to_owned()
            } else {
                format_ms(s.p99_ms)
            },
        ),
    };
    for edge in edges {
        let marker = CHANGES
            .iter()
            .find(|(c, _)| *c == edge.change)
            .map_or(" ", |(_, m)| m);
        let (req_now, err_now, p99_now) = cells(edge.current);
        let (req_then, err_then, p99_then) = cells(edge.baseline);
        let why: Vec<&str> = edge
            .reasons
            .iter()
            .map(|r| if r == "error_rate" { "err" } else { r.as_str() })
            .collect();
        let line = format!(
            "{marker}{GAP}{:<CHANGE_W$}{GAP}{:<client_w$}{ARROW}{:<server_w$}{GAP}{:<TYPE_W$}{GAP}{:>req_w$}\
             {GAP}{:>req_w$}{GAP}{err_now}{GAP}{err_then}{GAP}{:>LAT_W$}{GAP}{:>LAT_W$}{GAP}{}",
            truncate(&edge.change, CHANGE_W),
            truncate(&edge.source, client_w),
            truncate(&edge.target, server_w),
            truncate(connection_label(&edge.connection_type), TYPE_W),
            req_now,
            req_then,
            p99_now,
            p99_then,
            truncate(&why.join(","), WHY_W),
        );
        let line = line.trim_end();
        if colour && edge.change == "regressed" {
            let _ = writeln!(out, "{RED}{line}{RESET}");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Widths of the edge table's fixed columns.
const TYPE_W: usize = 7;
const RATE_W: usize = 7;
const ERR_W: usize = 6;
const LAT_W: usize = 7;
const ARROW: &str = " → ";
const GAP: &str = "  ";

fn render_edges(out: &mut String, edges: &[Edge], colour: bool) {
    let mut edges: Vec<&Edge> = edges.iter().collect();
    edges.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.target.cmp(&b.target))
            .then_with(|| a.connection_type.cmp(&b.connection_type))
    });

    let fixed =
        ARROW.chars().count() + 3 * GAP.len() + TYPE_W + RATE_W + ERR_W + 4 * (GAP.len() + LAT_W);
    let (client_w, server_w) = split_width(
        widest("CLIENT", edges.iter().map(|e| e.source.as_str())),
        widest("SERVER", edges.iter().map(|e| e.target.as_str())),
        MAX_WIDTH - fixed,
    );

    let _ = writeln!(
        out,
        "{:<client_w$}{}{:<server_w$}{GAP}{:<TYPE_W$}{GAP}{:>RATE_W$}{GAP}{:>ERR_W$}\
         {GAP}{:>LAT_W$}{GAP}{:>LAT_W$}{GAP}{:>LAT_W$}{GAP}{:>LAT_W$}",
        "CLIENT",
        " ".repeat(ARROW.chars().count()),
        "SERVER",
        "TYPE",
        "REQ/S",
        "ERR%",
        "CLI p50",
        "CLI p99",
        "SRV p50",
        "SRV p99",
    );
    for edge in edges {
        let _ = writeln!(
            out,
            "{:<client_w$}{ARROW}{:<server_w$}{GAP}{:<TYPE_W$}{GAP}{:>RATE_W$}{GAP}{}\
             {GAP}{:>LAT_W$}{GAP}{:>LAT_W$}{GAP}{:>LAT_W$}{GAP}{:>LAT_W$}",
            truncate(&edge.source, client_w),
            truncate(&edge.target, server_w),
            truncate(connection_label(&edge.connection_type), TYPE_W),
            format_rate(edge.rate_per_s),
            error_cell(edge.requests, edge.error_rate, colour),
            latency_cell(&edge.client_latency_ms, |l| l.p50),
            latency_cell(&edge.client_latency_ms, |l| l.p99),
            latency_cell(&edge.server_latency_ms, |l| l.p50),
            latency_cell(&edge.server_latency_ms, |l| l.p99),
        );
    }
}

const KIND_W: usize = 9;
const REQ_W: usize = 8;

fn render_nodes(out: &mut String, nodes: &[Node], colour: bool) {
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.id.cmp(&b.id)));

    let fixed = 4 * GAP.len() + KIND_W + REQ_W + ERR_W + LAT_W;
    let name_w = widest("SERVICE", nodes.iter().map(|n| n.id.as_str())).min(MAX_WIDTH - fixed);

    let _ = writeln!(
        out,
        "{:<name_w$}{GAP}{:<KIND_W$}{GAP}{:>REQ_W$}{GAP}{:>ERR_W$}{GAP}{:>LAT_W$}",
        "SERVICE", "KIND", "REQ", "ERR%", "p99",
    );
    for node in nodes {
        let p99 = if node.requests == 0 {
            "-".to_owned()
        } else {
            format_ms(node.latency_ms.p99)
        };
        let _ = writeln!(
            out,
            "{:<name_w$}{GAP}{:<KIND_W$}{GAP}{:>REQ_W$}{GAP}{}{GAP}{:>LAT_W$}",
            truncate(&node.id, name_w),
            truncate(&node.kind, KIND_W),
            format_count(node.requests),
            error_cell(node.requests, node.error_rate, colour),
            p99,
        );
    }
}

/// The width of a name column: its header or its longest name.
fn widest<'a>(header: &str, names: impl Iterator<Item = &'a str>) -> usize {
    names
        .map(|n| n.chars().count())
        .fold(header.len(), usize::max)
}

/// Gives two name columns `available` columns between them: each its
/// widest name if both fit, else the narrow one its width and the wide one
/// the rest, else half each.
fn split_width(left: usize, right: usize, available: usize) -> (usize, usize) {
    let half = available / 2;
    if left + right <= available {
        (left, right)
    } else if left <= half {
        (left, available - left)
    } else if right <= half {
        (available - right, right)
    } else {
        (half, available - half)
    }
}

/// The error-rate cell, padded before colouring so escapes do not skew alignment.
fn error_cell(requests: u64, rate: f64, colour: bool) -> String {
    if requests == 0 {
        return format!("{:>ERR_W$}", "-");
    }
    let cell = format!("{:>ERR_W$}", format_percent(rate));
    if colour && rate >= ERROR_RATE_CRITICAL {
        format!("{RED}{cell}{RESET}")
    } else {
        cell
    }
}

/// A latency quantile, or `-` for a side the edge has no spans of: a
/// database edge has no server span, an edge from `user` no client span,
/// and the API reports those as zeros.
fn latency_cell(latency: &Latency, quantile: impl Fn(&Latency) -> f64) -> String {
    if latency.p50 == 0.0 && latency.p99 == 0.0 && latency.avg == 0.0 {
        "-".to_owned()
    } else {
        format_ms(quantile(latency))
    }
}

/// The short name of a connection type; plain RPC/HTTP is blank.
fn connection_label(connection_type: &str) -> &str {
    match connection_type {
        "database" => "db",
        "messaging_system" => "msg",
        "virtual_node" => "virtual",
        other => other,
    }
}

/// Shortens `s` to `width` characters, marking the cut with `…`.
fn truncate(s: &str, width: usize) -> Cow<'_, str> {
    if s.chars().count() <= width {
        return Cow::Borrowed(s);
    }
    let mut short: String = s.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    Cow::Owned(short)
}

/// Requests per second: `0.83/s`, `12.5/s`, `420/s`, `12.3k/s`.
fn format_rate(per_s: f64) -> String {
    if per_s <= 0.0 {
        "0/s".to_owned()
    } else if per_s < 0.005 {
        "<0.01/s".to_owned()
    } else if per_s < 9.995 {
        format!("{per_s:.2}/s")
    } else if per_s < 99.95 {
        format!("{per_s:.1}/s")
    } else if per_s < 9_999.5 {
        format!("{per_s:.0}/s")
    } else {
        format!("{:.1}k/s", per_s / 1000.0)
    }
}

/// An error rate (0..=1) as a percentage: `0%`, `<0.1%`, `12.5%`, `100%`.
fn format_percent(rate: f64) -> String {
    let pct = rate * 100.0;
    if pct <= 0.0 {
        "0%".to_owned()
    } else if pct < 0.05 {
        "<0.1%".to_owned()
    } else if pct >= 99.95 {
        "100%".to_owned()
    } else {
        format!("{pct:.1}%")
    }
}

/// A count, shortened past five digits: `950`, `12345`, `123.5k`, `12.3M`.
fn format_count(n: u64) -> String {
    // Precision lost above 2^53 does not show at one decimal.
    let f = n as f64;
    if n < 100_000 {
        n.to_string()
    } else if n < 999_950 {
        format!("{:.1}k", f / 1e3)
    } else if n < 999_950_000 {
        format!("{:.1}M", f / 1e6)
    } else {
        format!("{:.1}G", f / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::Router;
    use axum::extract::Query;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;

    const LONG_NAME: &str = "payments-authorization-gateway-with-a-very-long-kubernetes-deployment-name-v2-canary-eu-west-1";

    /// A graph with every connection type, a long name, ties and sub-ms to
    /// multi-second latencies, in neither request nor name order.
    const SAMPLE: &str = r#"{
      "window": {"start": "2025-06-01T10:00:00Z", "end": "2025-06-01T10:05:00Z"},
      "nodes": [
        {"id": "checkout", "kind": "service", "requests": 250, "errors": 25, "error_rate": 0.1,
         "latency_ms": {"p50": 3.2, "p90": 40, "p99": 1200, "avg": 20}},
        {"id": "frontend", "kind": "service", "requests": 1000, "errors": 4, "error_rate": 0.004,
         "latency_ms": {"p50": 12, "p90": 80, "p99": 310.4, "avg": 25}},
        {"id": "user", "kind": "user", "requests": 0, "errors": 0, "error_rate": 0,
         "latency_ms": {"p50": 0, "p90": 0, "p99": 0, "avg": 0}},
        {"id": "postgres", "kind": "database", "requests": 900, "errors": 0, "error_rate": 0,
         "latency_ms": {"p50": 0.4, "p90": 1, "p99": 2.5, "avg": 0.6}},
        {"id": "orders", "kind": "messaging", "requests": 120, "errors": 0, "error_rate": 0,
         "latency_ms": {"p50": 1, "p90": 2, "p99": 3, "avg": 1.5}},
        {"id": "payments-authorization-gateway-with-a-very-long-kubernetes-deployment-name-v2-canary-eu-west-1",
         "kind": "service", "requests": 250, "errors": 1, "error_rate": 0.004,
         "latency_ms": {"p50": 20, "p90": 30, "p99": 45, "avg": 22}}
      ],
      "edges": [
        {"source": "checkout", "target": "payments-authorization-gateway-with-a-very-long-kubernetes-deployment-name-v2-canary-eu-west-1",
         "connection_type": "", "requests": 250, "errors": 1, "error_rate": 0.004, "rate_per_s": 0.83,
         "client_latency_ms": {"p50": 21, "p90": 33, "p99": 48, "avg": 24, "max": 90},
         "server_latency_ms": {"p50": 20, "p90": 30, "p99": 45, "avg": 22, "max": 85}},
        {"source": "frontend", "target": "checkout", "connection_type": "",
         "requests": 250, "errors": 25, "error_rate": 0.125, "rate_per_s": 0.83,
         "client_latency_ms": {"p50": 3.24, "p90": 50, "p99": 1204, "avg": 30, "max": 2000},
         "server_latency_ms": {"p50": 2.9, "p90": 40, "p99": 1180, "avg": 20, "max": 1900}},
        {"source": "user", "target": "frontend", "connection_type": "virtual_node",
         "requests": 1000, "errors": 4, "error_rate": 0.004, "rate_per_s": 3.333,
         "client_latency_ms": {"p50": 0, "p90": 0, "p99": 0, "avg": 0, "max": 0},
         "server_latency_ms": {"p50": 12, "p90": 80, "p99": 310.4, "avg": 25, "max": 900}},
        {"source": "checkout", "target": "postgres", "connection_type": "database",
         "requests": 900, "errors": 0, "error_rate": 0, "rate_per_s": 3.0,
         "client_latency_ms": {"p50": 0.42, "p90": 1, "p99": 2.5, "avg": 0.6, "max": 9},
         "server_latency_ms": {"p50": 0, "p90": 0, "p99": 0, "avg": 0, "max": 0}},
        {"source": "checkout", "target": "orders", "connection_type": "messaging_system",
         "requests": 120, "errors": 0, "error_rate": 0, "rate_per_s": 0.4,
         "client_latency_ms": {"p50": 1, "p90": 2, "p99": 3, "avg": 1.5, "max": 4},
         "server_latency_ms": {"p50": 1, "p90": 2, "p99": 3, "avg": 1.5, "max": 4}}
      ]
    }"#;

    const EMPTY: &str = r#"{"window": {"start": "2025-06-01T10:00:00Z", "end": "2025-06-01T10:05:00Z"},
                           "nodes": [], "edges": []}"#;

    const DIFF: &str = r#"{
      "window": {"start": "2025-06-02T10:00:00Z", "end": "2025-06-02T10:15:00Z"},
      "baseline": {"start": "2025-06-01T10:00:00Z", "end": "2025-06-01T10:15:00Z"},
      "edges": [
        {"source": "checkout", "target": "payments-authorization-gateway-with-a-very-long-kubernetes-deployment-name-v2-canary-eu-west-1",
         "connection_type": "", "change": "unchanged", "reasons": [],
         "current": {"requests": 250, "errors": 1, "error_rate": 0.004, "p99_ms": 45},
         "baseline": {"requests": 240, "errors": 1, "error_rate": 0.004, "p99_ms": 44}},
        {"source": "checkout", "target": "postgres", "connection_type": "database", "change": "improved",
         "reasons": ["p99"],
         "current": {"requests": 900, "errors": 0, "error_rate": 0, "p99_ms": 2.5},
         "baseline": {"requests": 880, "errors": 0, "error_rate": 0, "p99_ms": 9}},
        {"source": "checkout", "target": "fraud", "connection_type": "", "change": "new", "reasons": [],
         "current": {"requests": 12, "errors": 0, "error_rate": 0, "p99_ms": 30}, "baseline": null},
        {"source": "checkout", "target": "legacy", "connection_type": "", "change": "vanished", "reasons": [],
         "current": null, "baseline": {"requests": 130000, "errors": 2, "error_rate": 0.0000154, "p99_ms": 1300}},
        {"source": "frontend", "target": "checkout", "connection_type": "", "change": "regressed",
         "reasons": ["error_rate", "p99"],
         "current": {"requests": 250, "errors": 25, "error_rate": 0.1, "p99_ms": 1204},
         "baseline": {"requests": 260, "errors": 1, "error_rate": 0.0038, "p99_ms": 310}}
      ]
    }"#;

    const DOT: &str = "digraph tracemap {\n  \"frontend\" -> \"checkout\";\n}\n";
    const MERMAID: &str = "flowchart LR\n  frontend --> checkout";

    fn sample() -> Graph {
        serde_json::from_str(SAMPLE).expect("the sample follows the contract")
    }

    fn args(url: &str, format: MapFormat) -> MapArgs {
        MapArgs {
            url: Some(url.to_owned()),
            format,
            color: ColorChoice::Never,
            ..MapArgs::default()
        }
    }

    fn assert_fits(text: &str) {
        for line in text.lines() {
            assert!(
                line.chars().count() <= MAX_WIDTH,
                "{} columns: {line:?}",
                line.chars().count()
            );
        }
    }

    /// The first line of `table` where `client → server` appears, as an index.
    fn edge_line(table: &str, client: &str, server: &str) -> usize {
        table
            .lines()
            .position(|l| l.starts_with(client) && l.contains(&format!("→ {server}")))
            .unwrap_or_else(|| panic!("no {client} → {server} line in\n{table}"))
    }

    #[test]
    fn table_sorts_edges_by_requests_then_names() {
        let table = render_table(&sample(), "in the last 5m", false);
        let order = [
            edge_line(&table, "user", "frontend"),
            edge_line(&table, "checkout", "postgres"),
            edge_line(&table, "checkout", "payments-"),
            edge_line(&table, "frontend", "checkout"),
            edge_line(&table, "checkout", "orders"),
        ];
        assert!(order.is_sorted(), "order {order:?} in\n{table}");
    }

    #[test]
    fn table_fits_120_columns_and_truncates_long_names() {
        let table = render_table(&sample(), "in the last 5m", false);
        assert_fits(&table);
        assert!(!table.contains(LONG_NAME), "{table}");
        assert!(table.contains("payments-authorization-gateway"), "{table}");
        let cut = table.lines().filter(|l| l.contains('…')).count();
        assert_eq!(cut, 2, "the edge and the node row are cut:\n{table}");
        let widest = table.lines().map(|l| l.chars().count()).max();
        assert_eq!(
            widest,
            Some(MAX_WIDTH),
            "long names use the full width:\n{table}"
        );
    }

    #[test]
    fn table_columns_are_aligned_with_units() {
        let table = render_table(&sample(), "in the last 5m", false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("service map in the last 5m (2025-06-01T10:00:00Z → "),
            "{table}"
        );
        assert!(lines[0].ends_with("6 nodes, 5 edges"), "{table}");

        let row = lines[edge_line(&table, "frontend", "checkout")];
        for cell in ["0.83/s", "12.5%", "3.2ms", "1.20s", "2.9ms", "1.18s"] {
            assert!(row.contains(cell), "{cell} missing from {row:?}");
        }
        let db = lines[edge_line(&table, "checkout", "postgres")];
        assert!(
            db.contains(" db ") && db.contains("3.00/s") && db.contains("0.42ms"),
            "{db:?}"
        );
        assert!(lines[edge_line(&table, "checkout", "orders")].contains(" msg "));
        assert!(
            db.ends_with("2.5ms        -        -"),
            "no server side: {db:?}"
        );
        let virt = lines[edge_line(&table, "user", "frontend")];
        assert!(virt.contains(" virtual   3.33/s"), "{virt:?}");
        assert!(
            virt.ends_with("-        -     12ms    310ms"),
            "no client side: {virt:?}"
        );

        // Right-aligned numbers end in the same column as their header.
        let header = lines[2];
        assert!(header.starts_with("CLIENT"), "{table}");
        let end_of = |line: &str, cell: &str| {
            line.find(cell)
                .map(|i| line[..i + cell.len()].chars().count())
        };
        assert_eq!(end_of(header, "ERR%"), end_of(row, "12.5%"));
        assert_eq!(end_of(header, "REQ/S"), end_of(row, "0.83/s"));
        assert_eq!(header.chars().count(), row.chars().count());
    }

    #[test]
    fn table_summarises_nodes() {
        let table = render_table(&sample(), "in the last 5m", false);
        let nodes = table.split("\n\n").last().expect("a node section");
        let lines: Vec<&str> = nodes.lines().collect();
        assert!(
            lines[0].starts_with("SERVICE") && lines[0].ends_with("p99"),
            "{nodes}"
        );
        assert!(lines[1].starts_with("frontend"), "{nodes}");
        let checkout = lines
            .iter()
            .find(|l| l.starts_with("checkout"))
            .expect("checkout");
        for cell in ["service", "250", "10.0%", "1.20s"] {
            assert!(checkout.contains(cell), "{cell} missing from {checkout:?}");
        }
        let user = lines.last().expect("user is last with no requests");
        assert!(user.starts_with("user") && user.ends_with('-'), "{user:?}");
    }

    #[test]
    fn colour_marks_only_high_error_rates() {
        let plain = render_table(&sample(), "in the last 5m", false);
        assert!(!plain.contains('\x1b'), "{plain}");

        let coloured = render_table(&sample(), "in the last 5m", true);
        assert!(
            coloured.contains(&format!("{RED} 12.5%{RESET}")),
            "{coloured}"
        );
        assert!(
            coloured.contains(&format!("{RED} 10.0%{RESET}")),
            "{coloured}"
        );
        assert_eq!(coloured.matches(RED).count(), 2, "{coloured}");
    }

    #[test]
    fn empty_graph_says_so() {
        let graph: Graph = serde_json::from_str(EMPTY).expect("valid");
        assert_eq!(
            render_table(&graph, "in the last 5m", false),
            "no edges in the last 5m\n"
        );
    }

    #[test]
    fn diff_table_marks_changes_worst_first_within_120_columns() {
        let diff: Diff = serde_json::from_str(DIFF).expect("the diff contract");
        let table = render_diff(&diff, false);
        assert_fits(&table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "changes 2025-06-02T10:00:00Z → 2025-06-02T10:15:00Z against 2025-06-01T10:00:00Z → \
             2025-06-01T10:15:00Z"
        );
        assert_eq!(
            lines[1],
            "1 regressed, 1 new, 1 vanished, 1 improved, 1 unchanged"
        );
        assert!(lines[3].starts_with("   CHANGE"), "{table}");
        assert!(lines[3].ends_with("WHY"), "{table}");
        let rows = &lines[4..];
        let starts: Vec<&str> = rows.iter().map(|l| &l[..12]).collect();
        assert_eq!(
            starts,
            [
                "!  regressed",
                "+  new      ",
                "-  vanished ",
                "   improved ",
                "   unchanged"
            ],
            "{table}"
        );
        let regressed = rows[0];
        for cell in [
            "frontend",
            "→ checkout",
            "250",
            "260",
            "10.0%",
            "0.4%",
            "1.20s",
            "310ms",
            "err,p99",
        ] {
            assert!(
                regressed.contains(cell),
                "{cell} missing from {regressed:?}"
            );
        }
        assert!(
            rows[1].ends_with("30ms        -"),
            "nothing before a new edge: {:?}",
            rows[1]
        );
        assert!(rows[2].contains("130.0k"), "{:?}", rows[2]);
        assert!(rows[4].contains('…'), "long names are cut: {:?}", rows[4]);

        let coloured = render_diff(&diff, true);
        assert_eq!(
            coloured.matches(RED).count(),
            1,
            "only the regression is red"
        );
        let empty: Diff = serde_json::from_str(
            r#"{"window": {"start": "a", "end": "b"}, "baseline": {"start": "c", "end": "d"}, "edges": []}"#,
        )
        .expect("valid");
        assert!(render_diff(&empty, false).ends_with("no edges in either window\n"));
    }

    #[test]
    fn baseline_is_an_offset_or_a_time() {
        assert_eq!(baseline_param("1d"), ("baseline_offset", "1d"));
        assert_eq!(baseline_param("90m"), ("baseline_offset", "90m"));
        assert_eq!(
            baseline_param("2025-06-01T10:00:00Z"),
            ("baseline_start", "2025-06-01T10:00:00Z")
        );
    }

    #[test]
    fn numbers_use_readable_units() {
        let rates = [
            (0.0, "0/s"),
            (0.001, "<0.01/s"),
            (0.83, "0.83/s"),
            (9.999, "10.0/s"),
        ];
        let rates =
            rates
                .into_iter()
                .chain([(42.0, "42.0/s"), (420.0, "420/s"), (12_345.0, "12.3k/s")]);
        for (value, text) in rates {
            assert_eq!(format_rate(value), text, "{value}");
        }
        let percents = [
            (0.0, "0%"),
            (0.0004, "<0.1%"),
            (0.125, "12.5%"),
            (0.05, "5.0%"),
            (1.0, "100%"),
        ];
        for (value, text) in percents {
            assert_eq!(format_percent(value), text, "{value}");
        }
        let millis = [
            (0.0, "0ms"),
            (0.42, "0.42ms"),
            (3.24, "3.2ms"),
            (9.96, "10ms"),
            (125.4, "125ms"),
            (999.6, "1.00s"),
            (1204.0, "1.20s"),
            (12_500.0, "12.5s"),
            (130_000.0, "130s"),
        ];
        for (value, text) in millis {
            assert_eq!(format_ms(value), text, "{value}");
            assert!(text.chars().count() <= LAT_W);
        }
        for (value, text) in [
            (950, "950"),
            (99_999, "99999"),
            (123_456, "123.5k"),
            (999_960, "1.0M"),
        ] {
            assert_eq!(format_count(value), text, "{value}");
        }
    }

    #[test]
    fn names_share_the_width() {
        assert_eq!(split_width(10, 12, 55), (10, 12));
        assert_eq!(split_width(10, 80, 55), (10, 45));
        assert_eq!(split_width(80, 10, 55), (45, 10));
        assert_eq!(split_width(80, 80, 55), (27, 28));
        assert_eq!(truncate("checkout", 8), "checkout");
        assert_eq!(truncate("checkout", 5), "chec…");
    }

    #[test]
    fn pretty_json_keeps_key_order_and_strings() {
        let raw = r#"{"window":{"start":"a","end":"b"},"nodes":[],"edges":[{"source":"x, {y}: \"z\"","n":1}]}"#;
        let pretty = pretty_json(raw);
        assert_eq!(
            pretty,
            "{\n  \"window\": {\n    \"start\": \"a\",\n    \"end\": \"b\"\n  },\n  \"nodes\": [],\n  \
             \"edges\": [\n    {\n      \"source\": \"x, {y}: \\\"z\\\"\",\n      \"n\": 1\n    }\n  ]\n}\n"
        );
        let back: serde_json::Value = serde_json::from_str(&pretty).expect("still json");
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(raw).expect("json")
        );
    }

    #[test]
    fn url_comes_from_flag_then_env_then_default() {
        let env =
            |value: &'static str| move |name: &str| (name == ENV_MAP_URL).then(|| value.to_owned());
        let none = MapArgs::default();
        let flag = MapArgs {
            url: Some("http://flag:1".to_owned()),
            ..MapArgs::default()
        };
        assert_eq!(flag.base_url(env("http://env:2")), "http://flag:1");
        assert_eq!(none.base_url(env("http://env:2")), "http://env:2");
        assert_eq!(none.base_url(env("")), DEFAULT_URL);
        assert_eq!(none.base_url(|_| None), DEFAULT_URL);
    }

    #[test]
    fn query_sends_the_window_unless_the_range_is_complete() {
        let with = |window: Option<&str>, start: Option<&str>, end: Option<&str>| MapArgs {
            window: window.map(Into::into),
            start: start.map(Into::into),
            end: end.map(Into::into),
            ..MapArgs::default()
        };
        assert_eq!(with(None, None, None).query(), [("window", "5m")]);
        assert_eq!(with(Some("2h"), None, None).query(), [("window", "2h")]);
        assert_eq!(
            with(None, Some("a"), Some("b")).query(),
            [("start", "a"), ("end", "b")]
        );
        assert_eq!(
            with(None, None, Some("b")).query(),
            [("end", "b"), ("window", "5m")]
        );
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_the_query() {
        let base = parse_base_url("localhost:8080/tracemap/").expect("valid");
        let url = endpoint(
            &base,
            "/api/v1/graph",
            &[("start", "2025-06-01T10:00:00+02:00")],
        );
        assert_eq!(
            url.as_str(),
            "http://localhost:8080/tracemap/api/v1/graph?start=2025-06-01T10%3A00%3A00%2B02%3A00"
        );
        assert!(is_loopback(&base));
        assert!(is_loopback(
            &parse_base_url("http://[::1]:8080").expect("valid")
        ));
        assert!(!is_loopback(
            &parse_base_url("http://collector:8080").expect("valid")
        ));
        assert!(matches!(
            parse_base_url("ftp://x"),
            Err(MapError::InvalidUrl { .. })
        ));
        let err = parse_base_url("https://x").expect_err("no tls");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("https is not supported")),
            "{err:?}"
        );
        assert!(matches!(
            parse_base_url("http://"),
            Err(MapError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn server_messages_are_extracted() {
        assert_eq!(
            server_message("invalid window \"5x\"\n"),
            "invalid window \"5x\""
        );
        assert_eq!(server_message(r#"{"error": "bad start"}"#), "bad start");
        assert_eq!(
            server_message(&"x".repeat(1000)).chars().count(),
            MAX_MESSAGE_CHARS
        );
    }

    /// A stand-in for the collector's API with canned answers; a window
    /// other than `5m` (or a start with its `+` lost) gets a 400.
    async fn serve() -> (String, tokio::task::JoinHandle<()>) {
        type Params = Query<HashMap<String, String>>;
        /// Answers like the real API: 400 with `{"error": ...}`.
        fn checked(params: &Params, ok: &'static str) -> axum::response::Response {
            let refuse = |message: String| {
                let body = axum::Json(serde_json::json!({ "error": message }));
                (StatusCode::BAD_REQUEST, body).into_response()
            };
            match (params.get("start"), params.get("end"), params.get("window")) {
                (Some(start), Some(_), None) if start == "2025-06-01T10:00:00+02:00" => {}
                (Some(start), _, _) => return refuse(format!("invalid start: {start:?}")),
                (None, None, Some(window)) if window == "5m" => {}
                (_, _, window) => {
                    let window = window.map_or("", String::as_str);
                    return refuse(format!(
                        "invalid window: {window:?}; expected a duration such as 30s, 5m or 2h"
                    ));
                }
            }
            ok.into_response()
        }
        let router = Router::new()
            .route(
                "/api/v1/graph",
                get(|p: Params| async move { checked(&p, SAMPLE) }),
            )
            .route(
                "/api/v1/graph.dot",
                get(|p: Params| async move { checked(&p, DOT) }),
            )
            .route(
                "/api/v1/graph.mermaid",
                get(|p: Params| async move { checked(&p, MERMAID) }),
            )
            .route(
                "/api/v1/diff",
                get(|p: Params| async move {
                    match (
                        p.get("window").map(String::as_str),
                        p.get("baseline_offset"),
                    ) {
                        (Some("15m"), Some(offset)) if offset == "1d" => DIFF.into_response(),
                        _ => (StatusCode::BAD_REQUEST, "unexpected diff query").into_response(),
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        (format!("http://{addr}"), server)
    }

    async fn output(args: MapArgs) -> Result<String, MapError> {
        let mut out = Vec::new();
        run(args, &mut out).await?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[tokio::test]
    async fn run_prints_each_format() {
        let (url, server) = serve().await;

        let json = output(args(&url, MapFormat::Json)).await.expect("json");
        assert_eq!(json, pretty_json(SAMPLE));
        assert!(json.starts_with("{\n  \"window\": {\n"), "{json}");

        let dot = output(args(&url, MapFormat::Dot)).await.expect("dot");
        assert_eq!(dot, DOT);
        let mermaid = output(args(&url, MapFormat::Mermaid))
            .await
            .expect("mermaid");
        assert_eq!(mermaid, format!("{MERMAID}\n"));

        let table = output(args(&url, MapFormat::Table)).await.expect("table");
        assert_eq!(table, render_table(&sample(), "in the last 5m", false));
        assert_fits(&table);

        let past = MapArgs {
            start: Some("2025-06-01T10:00:00+02:00".to_owned()),
            end: Some("2025-06-01T10:05:00+02:00".to_owned()),
            ..args(&url, MapFormat::Table)
        };
        let table = output(past).await.expect("past window");
        assert!(
            table
                .starts_with("service map between 2025-06-01T10:00:00Z and 2025-06-01T10:05:00Z ("),
            "{table}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn run_prints_the_diff_as_a_table_or_json() {
        let (url, server) = serve().await;
        let diff = |format| MapArgs {
            window: Some("15m".to_owned()),
            diff: Some("1d".to_owned()),
            ..args(&url, format)
        };
        let table = output(diff(MapFormat::Table)).await.expect("table");
        let parsed: Diff = serde_json::from_str(DIFF).expect("valid");
        assert_eq!(table, render_diff(&parsed, false));
        for format in [MapFormat::Json, MapFormat::Dot, MapFormat::Mermaid] {
            let json = output(diff(format)).await.expect("json");
            assert_eq!(json, pretty_json(DIFF), "{format:?}");
        }
        server.abort();
    }

    #[tokio::test]
    async fn run_reports_the_servers_message() {
        let (url, server) = serve().await;
        let bad = MapArgs {
            window: Some("5x".to_owned()),
            ..args(&url, MapFormat::Table)
        };
        let err = output(bad).await.expect_err("400");
        assert!(
            matches!(
                err,
                MapError::Status {
                    status: StatusCode::BAD_REQUEST,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("400 Bad Request: invalid window: \"5x\"; expected"),
            "{text}"
        );
        assert!(text.contains("window=5x"), "names the request: {text}");

        let wrong_path = args(&format!("{url}/prefix"), MapFormat::Json);
        let err = output(wrong_path).await.expect_err("404");
        assert!(err.to_string().contains("404 Not Found"), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn run_names_an_unreachable_url() {
        // A port that was free a moment ago and has no listener now.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        drop(listener);

        let err = output(args(&url, MapFormat::Table))
            .await
            .expect_err("refused");
        assert!(matches!(err, MapError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("tracemap run") && text.contains("tracemap demo"),
            "{text}"
        );
    }
}
