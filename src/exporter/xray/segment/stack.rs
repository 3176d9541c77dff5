//! Stack traces: the formats of the languages' own printers (Java and PHP,
//! Python, JavaScript, .NET, Go), most recent frame first as X-Ray shows
//! them.

use super::document::{Ascii, Exception, Frame};
use super::json::{ONES, has_zero};

/// Stack frames kept per exception; the X-Ray SDKs keep 50 by default.
pub(super) const MAX_FRAMES: usize = 50;

pub(super) fn parse_stack<'d>(
    language: Option<&str>,
    trace: &'d str,
    top: &mut Exception<'d>,
    chained: &mut Vec<Exception<'d>>,
    new_id: &mut dyn FnMut() -> Ascii<16>,
) {
    match language {
        // PHP SDKs print Java-style traces.
        Some("java" | "php") => java_stack(trace, top, chained, new_id),
        Some("python") => python_stack(trace, top),
        Some("nodejs" | "webjs" | "javascript") => {
            for frame in lines(trace).skip(1).filter_map(js_frame) {
                push_frame(top, frame);
            }
        }
        Some("dotnet") => {
            for frame in lines(trace).skip(1).filter_map(dotnet_frame) {
                push_frame(top, frame);
            }
        }
        Some("go") => go_stack(trace, top),
        _ => {}
    }
}

pub(super) fn push_frame<'d>(exception: &mut Exception<'d>, frame: Frame<'d>) {
    if exception.stack.len() < MAX_FRAMES {
        exception.stack.push(frame);
    } else {
        exception.truncated += 1;
    }
}

// Stack lines are short: plain byte scans beat the `str` pattern searchers,
// whose set-up per call cost more than the scan. Every cut is at an ASCII
// byte, so on a character boundary.

/// Lines without their `\n` or `\r\n`.
pub(super) fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = find_byte(rest, b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        rest = &rest[(end + 1).min(rest.len())..];
        Some(line.strip_suffix('\r').unwrap_or(line))
    })
}

/// Eight bytes at a time: stack traces are long, their lines short.
pub(super) fn find_byte(text: &str, byte: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let pattern = ONES * u64::from(byte);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word: [u8; 8] = chunk.try_into().unwrap_or_default();
        if has_zero(u64::from_le_bytes(word) ^ pattern) {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b == byte).map(|i| at + i)
}

pub(super) fn rfind_byte(text: &str, byte: u8) -> Option<usize> {
    text.bytes().rposition(|b| b == byte)
}

/// `text` from after `byte`'s last occurrence (all of it without one).
pub(super) fn after_last(text: &str, byte: u8) -> &str {
    rfind_byte(text, byte).map_or(text, |i| &text[i + 1..])
}

/// The text before and after the first `: `.
pub(super) fn split_colon_space(text: &str) -> (&str, &str) {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b':' && bytes[i + 1] == b' ')
        .map_or((text, ""), |i| (&text[..i], &text[i + 2..]))
}

/// A line number of up to nine digits.
pub(super) fn line_number(digits: &str) -> Option<u32> {
    let digits = digits.as_bytes();
    (!digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit))
        .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `path:line`, the line optional.
pub(super) fn path_line(location: &str) -> (&str, u32) {
    rfind_byte(location, b':')
        .and_then(|colon| Some((&location[..colon], line_number(&location[colon + 1..])?)))
        .unwrap_or((location, 0))
}

pub(super) fn trim_indent(line: &str) -> &str {
    line.trim_start_matches([' ', '\t'])
}

/// `Type: message`, then `\tat label(File.java:42)` frames and `Caused by:`
/// sections, each a chained exception.
pub(super) fn java_stack<'d>(
    trace: &'d str,
    top: &mut Exception<'d>,
    chained: &mut Vec<Exception<'d>>,
    new_id: &mut dyn FnMut() -> Ascii<16>,
) {
    for line in lines(trace).skip(1) {
        // One tab only: frames of suppressed exceptions are indented more.
        if let Some(frame) = line.strip_prefix("\tat ").and_then(java_frame) {
            push_frame(chained.last_mut().unwrap_or(top), frame);
        } else if let Some(caused) = line.strip_prefix("Caused by: ") {
            let (kind, message) = split_colon_space(caused);
            let id = new_id();
            chained.last_mut().unwrap_or(top).cause = Some(id);
            chained.push(Exception {
                id,
                kind,
                message,
                remote: top.remote,
                truncated: 0,
                cause: None,
                stack: Vec::new(),
            });
        }
    }
}

pub(super) fn java_frame(frame: &str) -> Option<Frame<'_>> {
    let frame = frame.strip_suffix(')')?;
    let paren = find_byte(frame, b'(')?;
    // Drop a module or class-loader prefix (`java.base/`).
    let label = after_last(&frame[..paren], b'/');
    let (path, line) = path_line(&frame[paren + 1..]);
    Some(Frame { path, line, label })
}

/// The last `Traceback (most recent call last):` block (the exception
/// raised last), whose `  File "p", line N, in f` frames run oldest first.
pub(super) fn python_stack<'d>(trace: &'d str, top: &mut Exception<'d>) {
    let last = trace
        .rfind("Traceback (most recent call last):")
        .map_or(trace, |i| &trace[i..]);
    let frames: Vec<Frame<'d>> = lines(last)
        .filter_map(|line| line.strip_prefix("  File \""))
        .filter_map(|rest| {
            let quote = find_byte(rest, b'"')?;
            let (path, rest) = (&rest[..quote], rest[quote..].strip_prefix("\", line ")?);
            let comma = find_byte(rest, b',').unwrap_or(rest.len());
            let label = rest[comma..].strip_prefix(", in ").unwrap_or_default();
            Some(Frame {
                path,
                line: line_number(rest[..comma].trim_end()).unwrap_or(0),
                label: label.trim_end(),
            })
        })
        .collect();
    for frame in frames.into_iter().rev() {
        push_frame(top, frame);
    }
}

/// `    at label (path:line:column)` or `    at path:line:column`.
pub(super) fn js_frame(line: &str) -> Option<Frame<'_>> {
    let frame = trim_indent(line).strip_prefix("at ")?;
    let (label, location) = match frame.strip_suffix(')').zip(rfind_byte(frame, b'(')) {
        Some((inner, paren)) if paren > 0 && frame.as_bytes()[paren - 1] == b' ' => {
            (&frame[..paren - 1], &inner[paren + 1..])
        }
        _ => ("", frame),
    };
    let (path, line) = match rfind_byte(location, b':') {
        Some(colon) if line_number(&location[colon + 1..]).is_some() => {
            path_line(&location[..colon])
        }
        _ => (location, 0),
    };
    Some(Frame { path, line, label })
}

/// `   at Label(args) in /path/File.cs:line 42`, the location optional.
pub(super) fn dotnet_frame(line: &str) -> Option<Frame<'_>> {
    let frame = trim_indent(line).strip_prefix("at ")?;
    let location = rfind_byte(frame, b')').and_then(|paren| {
        let location = frame[paren + 1..].strip_prefix(" in ")?;
        Some((paren, location))
    });
    Some(match location {
        Some((paren, location)) => {
            let (path, line) = rfind_byte(location, b':')
                .and_then(|colon| {
                    let line = location[colon + 1..].strip_prefix("line ")?;
                    Some((&location[..colon], line_number(line.trim_end())?))
                })
                .unwrap_or((location, 0));
            Frame {
                path,
                line,
                label: &frame[..=paren],
            }
        }
        None => Frame {
            path: "",
            line: 0,
            label: frame,
        },
    })
}

/// `path/to/pkg.(*T).Method(args)` lines, each followed by
/// `\t/path/file.go:12 +0x1d`; the X-Ray Go SDK's label is `(*T).Method`.
pub(super) fn go_stack<'d>(trace: &'d str, top: &mut Exception<'d>) {
    let mut label = None;
    for line in lines(trace) {
        if let Some(location) = line.strip_prefix('\t') {
            if let Some(label) = label.take() {
                let location = match rfind_byte(location, b'+') {
                    Some(plus) if location[..plus].ends_with(' ') => &location[..plus - 1],
                    _ => location,
                };
                let (path, line) = path_line(location);
                push_frame(top, Frame { path, line, label });
            }
        } else if line.is_empty() || line.starts_with("goroutine ") {
            label = None;
        } else {
            let function = rfind_byte(line, b'(').map_or(line, |paren| &line[..paren]);
            let function = after_last(function, b'/');
            label = Some(find_byte(function, b'.').map_or(function, |dot| &function[dot + 1..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::exporter::xray::segment::tests::*;
    use crate::model::SpanKind;

    #[test]
    fn cause_from_java_exception_with_chain() {
        let stack = "java.lang.IllegalStateException: order failed\n\
            \tat com.example.Orders.place(Orders.java:42)\n\
            \tat java.base/java.lang.Thread.run(Thread.java:833)\n\
            Caused by: java.io.IOException: disk full\n\
            \tat com.example.Disk.write(Disk.java:7)\n\
            \t... 1 more\n";
        let out = with_exception(
            SpanKind::Internal,
            "java",
            exception("java.lang.IllegalStateException", "order failed", stack),
        );
        assert_eq!(
            cause_without_ids(&out),
            json!({"exceptions": [
                {"type": "java.lang.IllegalStateException", "message": "order failed",
                 "cause": "<id>",
                 "stack": [
                    {"path": "Orders.java", "line": 42, "label": "com.example.Orders.place"},
                    {"path": "Thread.java", "line": 833, "label": "java.lang.Thread.run"}]},
                {"type": "java.io.IOException", "message": "disk full",
                 "stack": [{"path": "Disk.java", "line": 7, "label": "com.example.Disk.write"}]}
            ]})
        );
        // An exception alone sets no flag; the span status does.
        assert!(out.get("fault").is_none() && out.get("error").is_none());
    }

    #[test]
    fn cause_stacks_of_other_languages() {
        let python = "Traceback (most recent call last):\n  \
            File \"/app/main.py\", line 10, in handler\n    place()\n  \
            File \"/app/orders.py\", line 3, in place\n    raise ValueError(\"bad qty\")\n\
            ValueError: bad qty\n";
        let node =
            "Error: boom\n    at placeOrder (/app/orders.js:12:5)\n    at /app/index.js:3:1\n";
        let dotnet = "System.Exception: boom\n   at Shop.Orders.Place() in /src/Orders.cs:line 21\n   at Shop.Program.Main()\n";
        let go = "goroutine 1 [running]:\nmain.place(0x1)\n\t/app/main.go:12 +0x1d\nmain.main()\n\t/app/main.go:5 +0x25\n";
        let stack = |language, trace| {
            with_exception(SpanKind::Client, language, exception("E", "m", trace))["cause"]
                ["exceptions"][0]
                .clone()
        };
        let python = stack("python", python);
        assert_eq!(
            python["stack"],
            json!([{"path": "/app/orders.py", "line": 3, "label": "place"},
                   {"path": "/app/main.py", "line": 10, "label": "handler"}])
        );
        // Exceptions of outgoing calls are remote.
        assert_eq!(python["remote"], true);
        assert_eq!(
            stack("nodejs", node)["stack"],
            json!([{"path": "/app/orders.js", "line": 12, "label": "placeOrder"},
                   {"path": "/app/index.js", "line": 3}])
        );
        assert_eq!(
            stack("dotnet", dotnet)["stack"],
            json!([{"path": "/src/Orders.cs", "line": 21, "label": "Shop.Orders.Place()"},
                   {"label": "Shop.Program.Main()"}])
        );
        assert_eq!(
            stack("go", go)["stack"],
            json!([{"path": "/app/main.go", "line": 12, "label": "place"},
                   {"path": "/app/main.go", "line": 5, "label": "main"}])
        );
        let unknown = stack("rust", "panicked at src/main.rs:3:5");
        assert_eq!(unknown["type"], "E");
        assert!(unknown.get("stack").is_none());
        // Long stacks keep the X-Ray SDKs' 50 frames and count the rest.
        let long: String = std::iter::once("E: m\n".to_owned())
            .chain((0..70).map(|n| format!("\tat a.B.c{n}(B.java:{n})\n")))
            .collect();
        let long = stack("java", &long);
        assert_eq!(long["stack"].as_array().unwrap().len(), 50);
        assert_eq!(long["truncated"], 20);
    }

    proptest::proptest! {
        #[test]
        fn byte_search_finds_what_str_find_finds(text in "[a-c\n:]{0,40}") {
            for byte in [b'\n', b':', b'a'] {
                proptest::prop_assert_eq!(find_byte(&text, byte), text.find(char::from(byte)));
                proptest::prop_assert_eq!(rfind_byte(&text, byte), text.rfind(char::from(byte)));
            }
            let lines: Vec<&str> = lines(&text).collect();
            proptest::prop_assert_eq!(lines, text.lines().collect::<Vec<_>>());
        }
    }
}
