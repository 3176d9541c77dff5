//! Tests of `tracemap loadgen`: the pool's traces, the wire rewrite of
//! trace ids, and runs against the real collector.

use std::collections::{HashMap, HashSet};

use super::pool::*;
use super::*;

fn spec(requests: usize, batch_size: usize, tail: Option<(u64, usize)>) -> PoolSpec {
    PoolSpec {
        requests,
        batch_size,
        tail,
        services: 8,
        seed: 42,
        error_probability: 0.02,
    }
}

fn decode(entry: &Entry, mask: u64) -> ExportTraceServiceRequest {
    let mut buf = Vec::new();
    write_masked(&entry.bytes, &entry.trace_id_offsets, mask, &mut buf);
    ExportTraceServiceRequest::decode(buf.as_slice()).unwrap()
}

/// `(service, span)` for every span of a request.
fn spans_of(request: &ExportTraceServiceRequest) -> Vec<(String, &Span)> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        let service = attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                kit::any_value::Value::StringValue(s) => s.clone(),
                other => panic!("service.name is {other:?}"),
            })
            .unwrap();
        for ss in &rs.scope_spans {
            out.extend(ss.spans.iter().map(|s| (service.clone(), s)));
        }
    }
    out
}

/// `(trace id, span id)` to `(service, span)`.
type SpanIndex<'a> = HashMap<(&'a [u8], &'a [u8]), (&'a str, &'a Span)>;

fn has_attr(span: &Span, key: &str) -> bool {
    span.attributes.iter().any(|kv| kv.key == key)
}

#[test]
fn server_spans_are_children_of_client_spans_in_another_service() {
    let pool = Pool::generate(&spec(8, 512, None)).unwrap();
    let (mut paired, mut roots, mut db, mut clients) = (0, 0, 0, 0);
    for entry in &pool.entries {
        let request = decode(entry, 0);
        let spans = spans_of(&request);
        assert_eq!(spans.len(), 512);
        let by_id: SpanIndex = spans
            .iter()
            .map(|(svc, s)| {
                (
                    (s.trace_id.as_slice(), s.span_id.as_slice()),
                    (svc.as_str(), *s),
                )
            })
            .collect();
        assert_eq!(by_id.len(), 512, "span ids are unique within a trace");
        for (service, span) in &spans {
            assert_eq!(span.trace_id.len(), 16);
            assert!((6..=8).contains(&span.attributes.len()), "{span:?}");
            if span.kind == 3 {
                clients += 1;
                db += usize::from(has_attr(span, "db.system"));
                // Every database is named apart: a table's schema or a cache's peer.
                assert!(
                    !has_attr(span, "db.system")
                        || has_attr(span, "peer.service")
                        || has_attr(span, "db.collection.name"),
                    "{span:?}"
                );
            }
            if span.kind != 2 {
                continue;
            }
            if span.parent_span_id.is_empty() {
                roots += 1;
                continue;
            }
            let (parent_service, parent) =
                by_id[&(span.trace_id.as_slice(), span.parent_span_id.as_slice())];
            assert_eq!(parent.kind, 3, "a SERVER span's parent is a CLIENT span");
            assert_ne!(parent_service, service, "the call crosses services");
            assert!(!has_attr(parent, "db.system"));
            assert!(parent.start_time_unix_nano <= span.start_time_unix_nano);
            assert!(parent.end_time_unix_nano >= span.end_time_unix_nano);
            paired += 1;
        }
    }
    assert!(roots > 0 && paired > roots, "roots {roots}, pairs {paired}");
    assert!(db > 0 && db < clients, "db {db} of {clients} client spans");
}

#[test]
fn spans_are_about_350_bytes_and_about_two_percent_fail() {
    let pool = Pool::generate(&spec(16, 512, None)).unwrap();
    let per_span = pool.bytes_per_span();
    assert!(
        (320.0..=390.0).contains(&per_span),
        "{per_span} bytes a span"
    );
    let (mut errors, mut total) = (0, 0);
    for entry in &pool.entries {
        for (_, span) in spans_of(&decode(entry, 0)) {
            total += 1;
            errors += usize::from(span.status.as_ref().is_some_and(|s| s.code == 2));
        }
    }
    let share = errors as f64 / total as f64;
    assert!((0.01..=0.04).contains(&share), "error share {share}");
}

#[test]
fn trace_ids_differ_across_requests_and_rounds_and_stay_whole_per_trace() {
    let pool = Pool::generate(&spec(4, 256, None)).unwrap();
    let mut seen = HashSet::new();
    for round in 0..3 {
        let mut round_ids = HashSet::new();
        for entry in &pool.entries {
            assert_eq!(entry.trace_id_offsets.len(), entry.spans as usize);
            let masked = decode(entry, round_mask(round));
            let plain = decode(entry, 0);
            for ((_, a), (_, b)) in spans_of(&masked).iter().zip(spans_of(&plain)) {
                // The same trace maps to the same new id; only the high half moves.
                assert_eq!(a.trace_id[8..], b.trace_id[8..]);
                assert_eq!(a.span_id, b.span_id);
                assert_eq!(a.attributes, b.attributes);
                round_ids.insert(a.trace_id.clone());
            }
        }
        for id in &round_ids {
            assert!(
                seen.insert(id.clone()),
                "trace id repeated in round {round}"
            );
        }
    }
    assert!(seen.len() > 3 * 4 * 20);
}

#[test]
fn max_spans_gets_a_short_last_request() {
    // 2324 spans of 512: requests 0–3 are full, request 4 has 276,
    // whether the pool holds all four full ones or recycles two.
    for distinct in [4, 2] {
        let pool = Pool::generate(&spec(distinct, 512, Some((4, 276)))).unwrap();
        let counts: Vec<u32> = (0..5).map(|seq| pool.entry(seq).0.spans).collect();
        assert_eq!(counts, [512, 512, 512, 512, 276]);
        assert_eq!(spans_of(&decode(pool.entry(4).0, 0)).len(), 276);
    }
    // Fewer spans than one batch: only the tail.
    let pool = Pool::generate(&spec(0, 512, Some((0, 100)))).unwrap();
    assert_eq!(pool.entry(0).0.spans, 100);
}

#[test]
fn token_bucket_paces_to_the_rate() {
    let start = Instant::now();
    let mut schedule = Schedule::new(1000, 100, start);
    // 100 spans at 1000/s: 0.1 s apart once the 100 ms burst is spent.
    let times: Vec<Duration> = (0..5)
        .map(|_| schedule.next(start, |_| 100).unwrap().1 - start)
        .collect();
    assert_eq!(times[0], Duration::ZERO);
    assert_eq!(
        times[1],
        Duration::ZERO,
        "the burst allows a second request"
    );
    assert_eq!(times[2], Duration::from_millis(100));
    assert_eq!(times[4], Duration::from_millis(300));
    let mut unpaced = Schedule::new(0, 2, start);
    assert!(unpaced.next(start, |_| 1).is_some());
    assert!(unpaced.next(start, |_| 1).is_some());
    assert!(
        unpaced.next(start, |_| 1).is_none(),
        "bounded by max requests"
    );
}

#[test]
fn histogram_quantiles_are_within_two_percent() {
    let mut histogram = LatencyHistogram::default();
    for micros in 1..=10_000u64 {
        histogram.record(Duration::from_micros(micros));
    }
    let p50 = histogram.quantile(0.5).as_micros() as f64;
    let p99 = histogram.quantile(0.99).as_micros() as f64;
    assert!((p50 / 5000.0 - 1.0).abs() < 0.02, "p50 {p50}");
    assert!((p99 / 9900.0 - 1.0).abs() < 0.02, "p99 {p99}");
    for micros in [0, 1, 63, 64, 65, 1000, 123_456, 1 << 39] {
        let upper = LatencyHistogram::upper(LatencyHistogram::index(micros));
        assert!(upper >= micros && upper as f64 <= micros as f64 * 1.02 + 1.0);
    }
}

#[test]
fn retry_delay_follows_retry_info_and_is_capped() {
    let status = tonic::Status::with_error_details(
        tonic::Code::Unavailable,
        "full",
        tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(250))),
    );
    assert_eq!(retry_delay(&status, 0), Duration::from_millis(250));
    let plain = tonic::Status::unavailable("down");
    // Equal jitter: between half and all of the doubled delay, capped.
    let within = |attempt: u32, ceiling: Duration| {
        let delay = retry_delay(&plain, attempt);
        assert!(
            delay >= ceiling / 2 && delay <= ceiling,
            "{attempt}: {delay:?}"
        );
    };
    within(0, INITIAL_BACKOFF);
    within(2, INITIAL_BACKOFF * 4);
    within(10, MAX_BACKOFF);
}

#[test]
fn bad_flags_are_refused() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }
    let parse = |extra: &[&str]| {
        let mut argv = vec!["loadgen", "--endpoint", "http://127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    };
    let args = parse(&[]);
    assert_eq!((args.batch_size, args.concurrency, args.rate), (512, 16, 0));
    assert_eq!(args.duration, Duration::from_secs(30));
    assert!(args.validate().is_ok());
    assert_eq!(parse(&["--max-spans", "1025"]).max_requests(), 3);
    for bad in [
        &["--batch-size", "0"][..],
        &["--services", "1"],
        &["--max-spans", "0"],
    ] {
        let err = parse(bad).validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid --"), "{err}");
    }
    assert!(matches!(
        endpoint("https://example.invalid:4317"),
        Err(LoadgenError::InvalidArg { .. })
    ));
    assert_eq!(
        endpoint("127.0.0.1:4317").unwrap().uri().port_u16(),
        Some(4317)
    );
}
