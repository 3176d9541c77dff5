//! The terminal table of a graph or a diff: pure rendering, documents in,
//! text out, within 120 columns.

use std::borrow::Cow;
use std::fmt::Write as _;

use tracemap::web::health::ERROR_RATE_CRITICAL;
use tracemap::web::render::format_ms;

use super::{Diff, DiffEdge, DiffSide, Edge, Graph, Latency, MAX_WIDTH, Node, RED, RESET};

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
pub(super) const CHANGES: [(&str, &str); 5] = [
    ("regressed", "!"),
    ("new", "+"),
    ("vanished", "-"),
    ("improved", " "),
    ("unchanged", " "),
];

pub(super) const CHANGE_W: usize = 9;
pub(super) const WHY_W: usize = 7;

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
pub(super) const TYPE_W: usize = 7;
pub(super) const RATE_W: usize = 7;
pub(super) const ERR_W: usize = 6;
pub(super) const LAT_W: usize = 7;
pub(super) const ARROW: &str = " → ";
pub(super) const GAP: &str = "  ";

pub(super) fn render_edges(out: &mut String, edges: &[Edge], colour: bool) {
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

pub(super) const KIND_W: usize = 9;
pub(super) const REQ_W: usize = 8;

pub(super) fn render_nodes(out: &mut String, nodes: &[Node], colour: bool) {
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
pub(super) fn widest<'a>(header: &str, names: impl Iterator<Item = &'a str>) -> usize {
    names
        .map(|n| n.chars().count())
        .fold(header.len(), usize::max)
}

/// Gives two name columns `available` columns between them: each its
/// widest name if both fit, else the narrow one its width and the wide one
/// the rest, else half each.
pub(super) fn split_width(left: usize, right: usize, available: usize) -> (usize, usize) {
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
pub(super) fn error_cell(requests: u64, rate: f64, colour: bool) -> String {
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
pub(super) fn latency_cell(latency: &Latency, quantile: impl Fn(&Latency) -> f64) -> String {
    if latency.p50 == 0.0 && latency.p99 == 0.0 && latency.avg == 0.0 {
        "-".to_owned()
    } else {
        format_ms(quantile(latency))
    }
}

/// The short name of a connection type; plain RPC/HTTP is blank.
pub(super) fn connection_label(connection_type: &str) -> &str {
    match connection_type {
        "database" => "db",
        "messaging_system" => "msg",
        "virtual_node" => "virtual",
        other => other,
    }
}

/// Shortens `s` to `width` characters, marking the cut with `…`.
pub(super) fn truncate(s: &str, width: usize) -> Cow<'_, str> {
    if s.chars().count() <= width {
        return Cow::Borrowed(s);
    }
    let mut short: String = s.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    Cow::Owned(short)
}

/// Requests per second: `0.83/s`, `12.5/s`, `420/s`, `12.3k/s`.
pub(super) fn format_rate(per_s: f64) -> String {
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
pub(super) fn format_percent(rate: f64) -> String {
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
pub(super) fn format_count(n: u64) -> String {
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
