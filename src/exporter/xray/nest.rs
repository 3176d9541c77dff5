//! Subsegments embedded in their parent's document.
//!
//! The X-Ray SDKs send a segment with its subsegments inside it
//! (`"subsegments": [...]`); only a subsegment whose parent is elsewhere
//! has to stand alone, with `type`, `trace_id` and `parent_id`. The spans
//! of one batch are written the same way: each subsegment whose parent is
//! in the batch goes inside the parent's document, the rest stand alone.
//! X-Ray shows the same trace either way, with fewer and smaller documents,
//! so fewer PutTraceSegments calls carry the same spans.
//!
//! A document stays within [`MAX_DOCUMENT_BYTES`]: a subsegment that would
//! take its parent's document over is sent on its own instead, as is every
//! subsegment nested deeper than [`MAX_DEPTH`] (so recursion stays
//! shallow). Spans whose parents form a cycle are sent alone, unnested.

use std::collections::HashMap;
use std::time::SystemTime;

use super::segment::{self, DropReason, Form, MAX_DOCUMENT_BYTES, TranslateConfig};
use crate::model::{Span, SpanId, TraceId};

/// Nesting levels embedded in one document; deeper subsegments stand alone.
const MAX_DEPTH: u32 = 32;

const NONE: u32 = u32::MAX;

/// What [`Nesting::write`] produces for each document or dropped span.
#[derive(Debug)]
pub(crate) enum Written<'a> {
    /// A document, escaped as the contents of a JSON string.
    Document {
        /// The id of its outermost span, as `UnprocessedTraceSegments` names it.
        id: SpanId,
        /// How many spans it holds.
        spans: u32,
        escaped: &'a [u8],
    },
    /// A span translation refused, and why.
    Dropped(DropReason),
}

/// The parent/child links of one batch; reused, so a batch allocates only
/// when it is larger than every one before.
#[derive(Debug, Default)]
pub(crate) struct Nesting {
    index: HashMap<(TraceId, SpanId), u32, foldhash::fast::FixedState>,
    first_child: Vec<u32>,
    next_sibling: Vec<u32>,
    /// Whether the span has its parent in the batch (so is not a root).
    embedded: Vec<bool>,
    /// Whether the span has been written (or dropped) at least once.
    written: Vec<bool>,
    /// Subsegments to send on their own after the current documents.
    spill: Vec<u32>,
    /// Whether the span is (or was) in `spill`: it is then never embedded,
    /// even when a document around it is written again.
    spilled: Vec<bool>,
}

/// What one write needs besides the links.
struct Batch<'b, E> {
    spans: &'b [Span],
    config: &'b TranslateConfig,
    now: SystemTime,
    emit: E,
}

impl Nesting {
    /// Writes `spans` as documents, each into `scratch` and handed to
    /// `emit`; every span ends up in exactly one document or is reported
    /// dropped.
    pub(crate) fn write(
        &mut self,
        spans: &[Span],
        config: &TranslateConfig,
        now: SystemTime,
        scratch: &mut Vec<u8>,
        emit: impl FnMut(Written<'_>),
    ) {
        self.link(spans);
        let mut batch = Batch {
            spans,
            config,
            now,
            emit,
        };
        for i in 0..spans.len() as u32 {
            if !self.embedded[i as usize] {
                self.root(i, &mut batch, scratch, true);
            }
        }
        while let Some(i) = self.spill.pop() {
            self.root(i, &mut batch, scratch, true);
        }
        // Only spans in or below a parent cycle are left.
        for i in 0..spans.len() as u32 {
            if !self.written[i as usize] {
                self.root(i, &mut batch, scratch, false);
            }
        }
    }

    /// Links each subsegment to its parent, when the parent is in `spans`;
    /// children keep their batch order.
    fn link(&mut self, spans: &[Span]) {
        let n = spans.len();
        self.index.clear();
        self.spill.clear();
        for list in [&mut self.first_child, &mut self.next_sibling] {
            list.clear();
            list.resize(n, NONE);
        }
        for list in [&mut self.embedded, &mut self.written, &mut self.spilled] {
            list.clear();
            list.resize(n, false);
        }
        for (i, span) in spans.iter().enumerate() {
            self.index.insert((span.trace_id, span.span_id), i as u32);
        }
        // Backwards, so that prepending leaves children in batch order.
        for (i, span) in spans.iter().enumerate().rev() {
            if segment::is_segment(span) {
                continue;
            }
            let Some(parent) = span.parent_span_id else {
                continue;
            };
            let Some(&p) = self.index.get(&(span.trace_id, parent)) else {
                continue;
            };
            if p as usize == i {
                continue;
            }
            self.embedded[i] = true;
            self.next_sibling[i] = self.first_child[p as usize];
            self.first_child[p as usize] = i as u32;
        }
    }

    /// One standalone document: span `i`, with its children when `nest`.
    fn root<E: FnMut(Written<'_>)>(
        &mut self,
        i: u32,
        batch: &mut Batch<'_, E>,
        scratch: &mut Vec<u8>,
        nest: bool,
    ) {
        scratch.clear();
        let depth = if nest { 0 } else { MAX_DEPTH };
        if let Some(spans) = self.subtree(i, Form::Standalone, depth, batch, scratch) {
            (batch.emit)(Written::Document {
                id: batch.spans[i as usize].span_id,
                spans,
                escaped: scratch,
            });
        }
    }

    /// Appends span `i` to `out` with its children embedded; the number of
    /// spans written, or `None` when span `i` was dropped (its children
    /// are then sent on their own).
    fn subtree<E: FnMut(Written<'_>)>(
        &mut self,
        i: u32,
        form: Form,
        depth: u32,
        batch: &mut Batch<'_, E>,
        out: &mut Vec<u8>,
    ) -> Option<u32> {
        let idx = i as usize;
        // A span is written again when a document around it is moved out
        // for size; its drop is counted once.
        let first_time = !std::mem::replace(&mut self.written[idx], true);
        let start = out.len();
        let span = &batch.spans[idx];
        if let Err(why) =
            segment::translate_escaped_form_into(span, batch.config, batch.now, form, out)
        {
            if first_time {
                (batch.emit)(Written::Dropped(why));
            }
            self.spill_children(i);
            return None;
        }
        if self.first_child[idx] == NONE {
            return Some(1);
        }
        if depth >= MAX_DEPTH {
            self.spill_children(i);
            return Some(1);
        }
        // The document ends with its closing brace: reopen it.
        out.pop();
        let open = out.len();
        out.extend_from_slice(br#",\"subsegments\":["#);
        let mut count = 1;
        let mut embedded_any = false;
        let mut child = self.first_child[idx];
        while child != NONE {
            if self.spilled[child as usize] {
                child = self.next_sibling[child as usize];
                continue;
            }
            let mark = out.len();
            if embedded_any {
                out.push(b',');
            }
            match self.subtree(child, Form::Embedded, depth + 1, batch, out) {
                // `]}` still to come.
                Some(n) if segment::unescaped_len(&out[start..]) + 2 <= MAX_DOCUMENT_BYTES => {
                    count += n;
                    embedded_any = true;
                }
                Some(_) => {
                    out.truncate(mark);
                    self.spill(child);
                }
                None => out.truncate(mark),
            }
            child = self.next_sibling[child as usize];
        }
        if embedded_any {
            out.extend_from_slice(b"]}");
        } else {
            out.truncate(open);
            out.push(b'}');
        }
        Some(count)
    }

    fn spill_children(&mut self, i: u32) {
        let mut child = self.first_child[i as usize];
        while child != NONE {
            self.spill(child);
            child = self.next_sibling[child as usize];
        }
    }

    fn spill(&mut self, i: u32) {
        if !std::mem::replace(&mut self.spilled[i as usize], true) {
            self.spill.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::exporter::xray::segment::tests::{now, s, span};
    use crate::model::SpanKind;

    fn id(n: u64) -> SpanId {
        SpanId::from_bytes(n.to_be_bytes())
    }

    /// Span `n` of `kind` under span `parent` (0: none), in one trace.
    fn node(n: u64, parent: u64, kind: SpanKind) -> Span {
        let mut span = span(kind, &[]);
        span.span_id = id(n);
        span.parent_span_id = (parent != 0).then(|| id(parent));
        span
    }

    struct Out {
        /// (id, spans, parsed document) of each document, in order.
        docs: Vec<(SpanId, u32, Value)>,
        dropped: Vec<DropReason>,
    }

    fn write(spans: &[Span]) -> Out {
        let mut nesting = Nesting::default();
        let mut out = Out {
            docs: Vec::new(),
            dropped: Vec::new(),
        };
        let mut scratch = Vec::new();
        let config = TranslateConfig::default();
        // Twice through one `Nesting`: reuse must not leak state.
        for round in 0..2 {
            out.docs.clear();
            out.dropped.clear();
            nesting.write(
                spans,
                &config,
                now(),
                &mut scratch,
                |written| match written {
                    Written::Document { id, spans, escaped } => {
                        let escaped = std::str::from_utf8(escaped).unwrap();
                        let plain: String =
                            serde_json::from_str(&format!("\"{escaped}\"")).unwrap();
                        assert!(plain.len() <= MAX_DOCUMENT_BYTES, "round {round}");
                        out.docs
                            .push((id, spans, serde_json::from_str(&plain).unwrap()));
                    }
                    Written::Dropped(why) => out.dropped.push(why),
                },
            );
        }
        out
    }

    /// Ids of a document and of every subsegment embedded in it, depth first.
    fn ids(doc: &Value) -> Vec<String> {
        let mut all = vec![doc["id"].as_str().unwrap().to_owned()];
        for sub in doc["subsegments"].as_array().into_iter().flatten() {
            all.extend(ids(sub));
        }
        all
    }

    fn hex(n: u64) -> String {
        format!("{n:016x}")
    }

    /// The standalone document of `span`, without what embedding leaves out.
    fn as_embedded(span: &Span) -> Value {
        let mut alone: Value = serde_json::from_str(
            &segment::translate(span, &TranslateConfig::default(), now()).unwrap(),
        )
        .unwrap();
        for key in ["trace_id", "type", "parent_id"] {
            alone.as_object_mut().unwrap().remove(key);
        }
        alone
    }

    #[test]
    fn subsegments_go_inside_their_parents_document_in_batch_order() {
        // server 1 ─┬─ client 2
        //           └─ internal 3 ── client 4
        let spans = [
            node(4, 3, SpanKind::Client),
            node(2, 1, SpanKind::Client),
            node(1, 0, SpanKind::Server),
            node(3, 1, SpanKind::Internal),
        ];
        let out = write(&spans);
        assert!(out.dropped.is_empty());
        assert_eq!(out.docs.len(), 1);
        let (doc_id, count, doc) = &out.docs[0];
        assert_eq!((*doc_id, *count), (id(1), 4));
        assert_eq!(ids(doc), [hex(1), hex(2), hex(3), hex(4)]);
        // The segment keeps its own fields; embedded subsegments are their
        // standalone documents less trace_id, type and parent_id.
        assert_eq!(doc["trace_id"], "1-6553f0c4-111111111111111111111111");
        assert!(doc.get("type").is_none());
        let subs = doc["subsegments"].as_array().unwrap();
        assert_eq!(subs[0], as_embedded(&spans[1]));
        let mut three = subs[1].clone();
        let four = three
            .as_object_mut()
            .unwrap()
            .remove("subsegments")
            .unwrap();
        assert_eq!(three, as_embedded(&spans[3]));
        assert_eq!(four, Value::Array(vec![as_embedded(&spans[0])]));
    }

    #[test]
    fn segments_and_subsegments_without_their_parent_stand_alone() {
        let mut other_trace = node(5, 1, SpanKind::Client);
        other_trace.trace_id = crate::exporter::xray::segment::tests::epoch_trace_id(30);
        let spans = [
            node(1, 0, SpanKind::Server),
            // A SERVER span below a span of the batch is still a segment.
            node(2, 1, SpanKind::Server),
            // Its parent is in another batch.
            node(3, 9, SpanKind::Client),
            other_trace,
        ];
        let out = write(&spans);
        let got: Vec<(SpanId, u32)> = out.docs.iter().map(|(id, n, _)| (*id, *n)).collect();
        assert_eq!(got, [(id(1), 1), (id(2), 1), (id(3), 1), (id(5), 1)]);
        for (_, _, doc) in &out.docs {
            assert!(doc.get("subsegments").is_none());
        }
        assert_eq!(out.docs[2].2["type"], "subsegment");
        assert_eq!(out.docs[2].2["parent_id"], hex(9));
        assert_eq!(out.docs[3].2["parent_id"], hex(1));
    }

    #[test]
    fn a_subsegment_that_would_overfill_its_parent_is_sent_alone() {
        // Each subsegment's metadata takes about 25 kB: two fit, not three.
        let big = s(&"x".repeat(25_000));
        let mut spans = vec![node(1, 0, SpanKind::Server)];
        for n in 2..=4 {
            let mut child = span(SpanKind::Client, &[("payload", big.clone())]);
            child.span_id = id(n);
            child.parent_span_id = Some(id(1));
            spans.push(child);
        }
        let out = write(&spans);
        let got: Vec<(SpanId, u32)> = out.docs.iter().map(|(id, n, _)| (*id, *n)).collect();
        assert_eq!(got, [(id(1), 3), (id(4), 1)]);
        assert_eq!(ids(&out.docs[0].2), [hex(1), hex(2), hex(3)]);
        assert_eq!(out.docs[1].2["type"], "subsegment");
        assert_eq!(out.docs[1].2["parent_id"], hex(1));
    }

    #[test]
    fn nesting_stops_at_max_depth_and_every_span_is_sent_once() {
        // A chain 1 ← 2 ← … ← 40 of INTERNAL spans below a SERVER span.
        let mut spans = vec![node(1, 0, SpanKind::Server)];
        spans.extend((2..=40).map(|n| node(n, n - 1, SpanKind::Internal)));
        let out = write(&spans);
        let got: Vec<(SpanId, u32)> = out.docs.iter().map(|(id, n, _)| (*id, *n)).collect();
        let first = MAX_DEPTH as u64 + 1;
        assert_eq!(
            got,
            [(id(1), first as u32), (id(first + 1), 40 - first as u32)]
        );
        let all: Vec<String> = out.docs.iter().flat_map(|(_, _, d)| ids(d)).collect();
        assert_eq!(all, (1..=40).map(hex).collect::<Vec<_>>());
        assert_eq!(out.docs[1].2["parent_id"], hex(first));
    }

    #[test]
    fn parents_in_a_cycle_are_sent_alone() {
        let spans = [
            node(1, 2, SpanKind::Client),
            node(2, 1, SpanKind::Client),
            node(3, 2, SpanKind::Client),
        ];
        let out = write(&spans);
        let got: Vec<(SpanId, u32)> = out.docs.iter().map(|(id, n, _)| (*id, *n)).collect();
        assert_eq!(got, [(id(1), 1), (id(2), 1), (id(3), 1)]);
        assert!(out.docs.iter().all(|(_, _, d)| d["type"] == "subsegment"));
    }

    #[test]
    fn a_dropped_subsegment_is_counted_once_and_its_siblings_stay() {
        let mut bad = node(0, 1, SpanKind::Client);
        bad.span_id = SpanId::from_bytes([0; 8]);
        let spans = [
            node(1, 0, SpanKind::Server),
            bad,
            node(3, 1, SpanKind::Client),
        ];
        let out = write(&spans);
        assert_eq!(out.dropped, [DropReason::InvalidSpanId]);
        assert_eq!(out.docs.len(), 1);
        assert_eq!(out.docs[0].1, 2);
        assert_eq!(ids(&out.docs[0].2), [hex(1), hex(3)]);
    }
}
