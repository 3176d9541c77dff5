//! Rendezvous (highest random weight) placement of traces on gateways.
//!
//! Every gateway gets a score per trace, a hash of the trace id and the
//! gateway's key; the trace goes to the highest. All agents compute the same
//! scores from the same keys, so a trace's spans meet in one gateway
//! wherever they were received. Adding a gateway moves to it only the
//! traces it now wins (about 1/N); removing one moves only its own traces,
//! each to its second-ranked gateway. Failing over past a down gateway is
//! the same second choice, so failover and a membership change agree.
//!
//! Why rendezvous rather than a ring: no virtual nodes to tune, even
//! spread at any N, and the hash order doubles as the failover order; the
//! cost, N hashes a span, is small for the tens of gateways a tier has.
//!
//! The hashes are written out here (FNV-1a and the splitmix64 finaliser),
//! not taken from a hashing crate, because placement must not change when
//! a dependency does: agents of different versions share gateways during a
//! rollout.

use crate::model::{TraceId, mix64};

/// A gateway's hash identity, from its key (`host:port` or `ip:port`).
pub fn gateway_seed(key: &str) -> u64 {
    // FNV-1a over the key, then mixed so that similar keys diverge.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(hash)
}

/// The trace's half of every score.
pub fn trace_hash(trace_id: &TraceId) -> u64 {
    trace_id.shard_hash()
}

/// Score of a gateway for a trace; the highest wins.
#[inline]
pub fn score(trace_hash: u64, seed: u64) -> u64 {
    mix64(trace_hash ^ seed)
}

/// Index of the highest-scoring gateway among those `eligible` says yes
/// to; ties go to the larger seed, so every agent breaks them alike.
#[inline]
pub fn best(trace_hash: u64, seeds: &[u64], eligible: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(u64, u64, usize)> = None;
    for (index, &seed) in seeds.iter().enumerate() {
        if !eligible(index) {
            continue;
        }
        let candidate = (score(trace_hash, seed), seed, index);
        if best.is_none_or(|b| (candidate.0, candidate.1) > (b.0, b.1)) {
            best = Some(candidate);
        }
    }
    best.map(|(_, _, index)| index)
}

/// The gateway for a trace: the best one that is up, or the best of all
/// when none is up (its queue then holds the spans while it retries).
#[inline]
pub fn place(trace_hash: u64, seeds: &[u64], up: impl Fn(usize) -> bool) -> Option<usize> {
    best(trace_hash, seeds, &up).or_else(|| best(trace_hash, seeds, |_| true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(count: u64) -> Vec<u64> {
        // Trace ids as SDKs make them: random bytes (here a fixed sequence).
        (1..=count)
            .map(|i| {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&mix64(i).to_be_bytes());
                bytes[8..].copy_from_slice(&mix64(i ^ 0xdead_beef).to_be_bytes());
                trace_hash(&TraceId::from_bytes(bytes))
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{i}.7:4317")).collect()
    }

    fn placement(traces: &[u64], keys: &[String]) -> Vec<String> {
        let seeds: Vec<u64> = keys.iter().map(|k| gateway_seed(k)).collect();
        traces
            .iter()
            .map(|&t| keys[place(t, &seeds, |_| true).unwrap()].clone())
            .collect()
    }

    #[test]
    fn placement_is_stable_and_independent_of_list_order() {
        let traces = traces(5_000);
        let keys = keys(5);
        let mut reversed = keys.clone();
        reversed.reverse();
        let first = placement(&traces, &keys);
        assert_eq!(first, placement(&traces, &keys));
        assert_eq!(first, placement(&traces, &reversed));
        // Pinned: placement must not change between versions, or agents
        // of two versions would split traces during a rollout.
        assert_eq!(gateway_seed("10.0.0.7:4317"), 0xaca1_8817_7a03_03a6);
        assert_eq!(
            first[..3],
            ["10.0.4.7:4317", "10.0.3.7:4317", "10.0.2.7:4317"]
        );
    }

    #[test]
    fn traces_spread_evenly() {
        let traces = traces(60_000);
        for n in [2, 3, 5, 16] {
            let placed = placement(&traces, &keys(n));
            let expected = traces.len() as f64 / n as f64;
            for key in keys(n) {
                let got = placed.iter().filter(|p| **p == key).count() as f64;
                assert!(
                    (got - expected).abs() < expected * 0.05,
                    "{key} of {n}: {got} traces, expected about {expected}"
                );
            }
        }
    }

    #[test]
    fn adding_a_gateway_moves_about_one_nth_and_only_to_it() {
        let traces = traces(60_000);
        for n in [2, 4, 9] {
            let before = placement(&traces, &keys(n));
            let after = placement(&traces, &keys(n + 1));
            let new_key = &keys(n + 1)[n];
            let moved: Vec<_> = (0..traces.len())
                .filter(|&i| before[i] != after[i])
                .collect();
            assert!(
                moved.iter().all(|&i| &after[i] == new_key),
                "moved elsewhere"
            );
            let share = moved.len() as f64 / traces.len() as f64;
            let ideal = 1.0 / (n + 1) as f64;
            assert!(
                (share - ideal).abs() < ideal * 0.08,
                "{n} -> {}: moved {share:.4}, ideal {ideal:.4}",
                n + 1
            );
        }
    }

    #[test]
    fn removing_a_gateway_moves_only_its_traces_to_their_failover() {
        let traces = traces(30_000);
        let all = keys(5);
        let seeds: Vec<u64> = all.iter().map(|k| gateway_seed(k)).collect();
        let gone = 2;
        let remaining: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, k)| k.clone())
            .collect();
        let before = placement(&traces, &all);
        let after = placement(&traces, &remaining);
        for (i, &trace) in traces.iter().enumerate() {
            if before[i] != all[gone] {
                assert_eq!(before[i], after[i], "a trace of a surviving gateway moved");
            }
            // Failing over past the down gateway lands where removal does.
            let failover = place(trace, &seeds, |g| g != gone).unwrap();
            assert_eq!(all[failover], after[i]);
        }
    }

    #[test]
    fn nobody_up_falls_back_to_the_primary() {
        let seeds: Vec<u64> = keys(3).iter().map(|k| gateway_seed(k)).collect();
        for trace in traces(100) {
            assert_eq!(
                place(trace, &seeds, |_| false),
                place(trace, &seeds, |_| true)
            );
        }
        assert_eq!(place(1, &[], |_| true), None);
    }
}
