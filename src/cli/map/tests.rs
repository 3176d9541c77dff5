//! Tests of `tracemap map`: rendering from documents, and the client against
//! an in-process API.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::get;

use super::table::*;
use super::*;
use tracemap::web::render::format_ms;

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
    // web::render tests the format itself; the table needs it to fit.
    for ms in [
        0.0, 0.42, 3.24, 9.96, 125.4, 999.6, 1204.0, 12_500.0, 130_000.0,
    ] {
        assert!(format_ms(ms).chars().count() <= LAT_W, "{ms}");
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
        table.starts_with("service map between 2025-06-01T10:00:00Z and 2025-06-01T10:05:00Z ("),
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
