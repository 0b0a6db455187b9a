//! Acknowledgements over time, for the JSON report (`per_second`, `ack_latency_ms`) and the HTML
//! page drawn from it: how many acknowledgements arrived in each second of the run, and how long the
//! sends made in each second waited for theirs (p50, p99, max). Pure functions of the sends.
//!
//! Latency is filed under the second a send was made, as Jepsen's latency plots place an operation
//! at its invocation: the sends caught by a paused or killed broker then show their wait right above
//! the fault that caused it, instead of after it. Throughput is filed under the second the
//! acknowledgement arrived: that is when the broker did the work.

use serde_json::{json, Value};

use crate::history::{Send, TimeMs};

/// Percentiles of a set of ack latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantiles {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// The nearest-rank `percent` percentile of `sorted` (ascending): the smallest value that at least
/// `percent`% of the values are at or below. Nearest rank, not interpolation, so every percentile is
/// a latency some send really had. None when there is no value.
pub fn nearest_rank(sorted: &[u64], percent: u64) -> Option<u64> {
    assert!((1..=100).contains(&percent), "a percentile between 1 and 100, not {percent}");
    debug_assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]), "nearest_rank wants sorted values");
    let rank = (sorted.len() as u64 * percent).div_ceil(100);
    // `rank` is 0 only for no values: one value or more gives a rank of at least 1.
    let index = usize::try_from(rank).ok()?.checked_sub(1)?;
    sorted.get(index).copied()
}

/// p50, p99 and max of `latencies_ms` (sorted in place); None when there is none.
pub fn quantiles(latencies_ms: &mut [u64]) -> Option<Quantiles> {
    latencies_ms.sort_unstable();
    let quantiles = Quantiles {
        p50_ms: nearest_rank(latencies_ms, 50)?,
        p99_ms: nearest_rank(latencies_ms, 99)?,
        max_ms: *latencies_ms.last()?,
    };
    assert!(quantiles.p50_ms <= quantiles.p99_ms, "p50 above p99: {quantiles:?}");
    assert!(quantiles.p99_ms <= quantiles.max_ms, "p99 above the max: {quantiles:?}");
    Some(quantiles)
}

/// An acknowledged send: when it was made and when its acknowledgement arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub sent_ms: TimeMs,
    pub acked_ms: TimeMs,
}

impl Ack {
    /// The wait for the acknowledgement. Both times come from the same monotonic clock, the ack's
    /// after the send's; saturating keeps a hand-made history that says otherwise from panicking.
    pub fn latency_ms(self) -> u64 {
        self.acked_ms.saturating_sub(self.sent_ms)
    }
}

/// The acknowledged sends of a run.
pub fn acks(sends: &[Send]) -> Vec<Ack> {
    let acked = sends.iter().filter(|send| send.acked_offset().is_some());
    acked.map(|send| Ack { sent_ms: send.sent_ms, acked_ms: send.done_ms }).collect()
}

/// Per second of the run (index 0: its first second), both vectors the same length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerSecond {
    /// Acknowledgements that arrived in each second.
    pub acked: Vec<u64>,
    /// Ack latency of the sends made in each second that were acknowledged; None if none was.
    pub ack_latency: Vec<Option<Quantiles>>,
}

/// The acknowledgements and ack latencies of `acks`, second by second.
pub fn per_second(acks: &[Ack]) -> PerSecond {
    let seconds = acks.iter().map(|ack| ack.acked_ms.max(ack.sent_ms) / 1000 + 1).max().unwrap_or(0);
    let seconds = usize::try_from(seconds).expect("a run shorter than usize::MAX seconds");
    let mut acked = vec![0u64; seconds];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); seconds];
    for ack in acks {
        acked[(ack.acked_ms / 1000) as usize] += 1;
        latencies[(ack.sent_ms / 1000) as usize].push(ack.latency_ms());
    }
    let ack_latency: Vec<Option<Quantiles>> = latencies.iter_mut().map(|second| quantiles(second)).collect();
    assert_eq!(acked.iter().sum::<u64>(), acks.len() as u64, "every acknowledgement counted once");
    assert_eq!(acked.len(), ack_latency.len(), "one latency entry per second");
    PerSecond { acked, ack_latency }
}

/// The JSON report's `per_second`: arrays indexed by the second of the run; a latency is `null` in a
/// second none of whose sends was acknowledged.
pub fn per_second_json(sends: &[Send]) -> Value {
    let per_second = per_second(&acks(sends));
    let series = |pick: fn(&Quantiles) -> u64| -> Vec<Option<u64>> {
        per_second.ack_latency.iter().map(|second| second.as_ref().map(pick)).collect()
    };
    json!({
        "acked": per_second.acked,
        "ack_latency_p50_ms": series(|quantiles| quantiles.p50_ms),
        "ack_latency_p99_ms": series(|quantiles| quantiles.p99_ms),
        "ack_latency_max_ms": series(|quantiles| quantiles.max_ms),
    })
}

/// The JSON report's `ack_latency_ms`: p50, p99 and max over every acknowledged send of the run
/// (`null` without any).
pub fn ack_latency_json(sends: &[Send]) -> Value {
    let mut latencies: Vec<u64> = acks(sends).into_iter().map(Ack::latency_ms).collect();
    let quantiles = quantiles(&mut latencies);
    json!({
        "p50": quantiles.map(|quantiles| quantiles.p50_ms),
        "p99": quantiles.map(|quantiles| quantiles.p99_ms),
        "max": quantiles.map(|quantiles| quantiles.max_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::SendOutcome;

    fn ack(sent_ms: u64, acked_ms: u64) -> Ack {
        Ack { sent_ms, acked_ms }
    }

    #[test]
    fn nearest_rank_picks_a_real_value() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 50), Some(50));
        assert_eq!(nearest_rank(&values, 99), Some(99));
        assert_eq!(nearest_rank(&values, 100), Some(100));
        assert_eq!(nearest_rank(&[7], 1), Some(7), "one value is every percentile");
        assert_eq!(nearest_rank(&[7], 99), Some(7));
        assert_eq!(nearest_rank(&[], 50), None, "no value, no percentile");
        assert_eq!(nearest_rank(&[1, 2], 50), Some(1));
        assert_eq!(nearest_rank(&[1, 2], 51), Some(2));
    }

    #[test]
    fn quantiles_of_a_long_tail() {
        let mut latencies: Vec<u64> = vec![5; 990];
        latencies.extend([2000; 9]);
        latencies.push(9000);
        let quantiles = quantiles(&mut latencies).expect("values");
        assert_eq!(quantiles, Quantiles { p50_ms: 5, p99_ms: 5, max_ms: 9000 });
        latencies.extend([2000; 2]);
        assert_eq!(super::quantiles(&mut latencies).map(|q| q.p99_ms), Some(2000), "11 of 1002 above: p99 in the tail");
        assert_eq!(super::quantiles(&mut []), None);
    }

    #[test]
    fn acknowledgements_by_arrival_latency_by_send() {
        // Sent in second 0, acknowledged in second 2 after a pause; two quick ones in second 1.
        let per_second = per_second(&[ack(900, 2100), ack(1000, 1004), ack(1500, 1510)]);
        assert_eq!(per_second.acked, vec![0, 2, 1]);
        assert_eq!(per_second.ack_latency[0], Some(Quantiles { p50_ms: 1200, p99_ms: 1200, max_ms: 1200 }));
        assert_eq!(per_second.ack_latency[1], Some(Quantiles { p50_ms: 4, p99_ms: 10, max_ms: 10 }));
        assert_eq!(per_second.ack_latency[2], None, "nothing was sent in second 2");
    }

    #[test]
    fn no_acks_and_one_ack() {
        assert_eq!(per_second(&[]), PerSecond::default(), "no ack: no seconds");
        let one = per_second(&[ack(10, 10)]);
        assert_eq!(one.acked, vec![1]);
        assert_eq!(one.ack_latency, vec![Some(Quantiles { p50_ms: 0, p99_ms: 0, max_ms: 0 })], "zero wait is a wait");
    }

    #[test]
    fn the_json_fields_count_only_acknowledged_sends() {
        let send = |sent_ms, done_ms, outcome| crate::history::Send {
            producer: 0,
            index: 0,
            value: 0,
            partition: 0,
            outcome,
            sent_ms,
            done_ms,
        };
        let sends = [
            send(0, 30, SendOutcome::Acked { offset: 0 }),
            send(100, 5000, SendOutcome::Failed { error: "timed out".into() }),
            send(1200, 1200, SendOutcome::Unknown),
        ];
        let per_second = per_second_json(&sends);
        assert_eq!(per_second["acked"], json!([1]));
        assert_eq!(per_second["ack_latency_p99_ms"], json!([30]));
        assert_eq!(ack_latency_json(&sends), json!({"p50": 30, "p99": 30, "max": 30}));
        assert_eq!(ack_latency_json(&[]), json!({"p50": null, "p99": null, "max": null}));
        assert_eq!(
            per_second_json(&[]),
            json!({"acked": [], "ack_latency_p50_ms": [], "ack_latency_p99_ms": [], "ack_latency_max_ms": []})
        );
    }
}
