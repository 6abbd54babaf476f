//! Property tests of the window operator through the built-in plugins' own
//! code, run natively (`plugin::native`): the laws windowing relies on,
//! checked on random data. The sandboxed components are the same code; the
//! top-level suite runs pipelines through them.

use proptest::prelude::*;
use sluice_config::PluginLimits;
use sluice_core::plugin::grouped::PerWindow;
use sluice_core::plugin::{AccumulatorHandle, Aggregation, native};
use sluice_core::watermark::Watermarks;
use sluice_core::window::{EmitKind, Triggers, WindowOperator, WindowResult, WindowSpec};

fn open(name: &str, config: &str) -> Box<dyn Aggregation> {
    native::aggregation(name, config).expect("the built-in opens")
}

/// The default trigger, `builtin/event-time`.
fn default_trigger() -> Triggers {
    Triggers::new(
        native::trigger("event-time", "{}").expect("opens"),
        Vec::new(),
        &PluginLimits::default(),
    )
}

/// Adds `values` (times are their indices) in batches cut at `cuts`.
fn feed(agg: &mut dyn Aggregation, values: &[f64], batch: usize) -> AccumulatorHandle {
    let acc = agg.create().expect("create");
    let times: Vec<i64> = (0..values.len() as i64).collect();
    for (v, t) in values.chunks(batch.max(1)).zip(times.chunks(batch.max(1))) {
        agg.add(acc, v, t).expect("add");
    }
    acc
}

/// Equal up to floating-point rounding (merges reassociate sums).
fn close(a: Option<f64>, b: Option<f64>, rel: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0),
        (None, None) => true,
        _ => false,
    }
}

fn assert_outputs_close(agg: &dyn Aggregation, got: &[Option<f64>], want: &[Option<f64>]) {
    assert_eq!(got.len(), want.len());
    for ((o, g), w) in agg.outputs().iter().zip(got).zip(want) {
        let exact = matches!(o.name.as_str(), "count" | "min" | "max") || o.name.starts_with('p');
        if exact {
            assert_eq!(g, w, "output {}", o.name);
        } else {
            assert!(close(*g, *w, 1e-9), "output {}: {g:?} vs {w:?}", o.name);
        }
    }
}

fn values() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![
            -1e6..1e6f64,
            0.1..5_000.0f64,
            (1u32..100).prop_map(f64::from),
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Merging accumulators of the parts gives the accumulator of the whole.
    #[test]
    fn merge_of_parts_equals_the_whole(values in values(), cuts in prop::collection::vec(0usize..400, 0..5)) {
        let mut agg = open("stats", r#"{"quantiles":[0.5,0.9,0.99]}"#);
        let whole = feed(agg.as_mut(), &values, 64);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(values.len())).collect();
        cuts.push(0);
        cuts.push(values.len());
        cuts.sort_unstable();
        let merged = agg.create().unwrap();
        for part in cuts.windows(2) {
            let acc = feed(agg.as_mut(), &values[part[0]..part[1]], 7);
            agg.merge(merged, acc).unwrap();
            agg.release(acc).unwrap();
        }
        let (got, want) = (agg.finish(merged).unwrap(), agg.finish(whole).unwrap());
        assert_outputs_close(agg.as_ref(), &got, &want);
    }

    /// Any batch split gives bit-identical results (the determinism of runs relies on it).
    #[test]
    fn batch_splits_do_not_change_results(values in values(), batch in 1usize..300) {
        for plugin in ["stats", "percentiles", "sum", "mean", "variance", "stddev"] {
            let mut agg = open(plugin, "{}");
            let a = feed(agg.as_mut(), &values, batch);
            let b = feed(agg.as_mut(), &values, 4096);
            prop_assert_eq!(agg.finish(a).unwrap(), agg.finish(b).unwrap(), "{}", plugin);
        }
    }

    /// Snapshot then restore gives the same state, now and after more input.
    #[test]
    fn snapshot_restore_round_trips(values in values(), more in values()) {
        for plugin in ["stats", "percentiles", "count", "min", "max", "variance"] {
            let mut agg = open(plugin, "{}");
            let original = feed(agg.as_mut(), &values, 100);
            let bytes = agg.snapshot(original).unwrap();
            let version = agg.info().state_version;
            let restored = agg.restore(&bytes, version).unwrap();
            prop_assert_eq!(agg.finish(original).unwrap(), agg.finish(restored).unwrap());
            let times: Vec<i64> = vec![0; more.len()];
            agg.add(original, &more, &times).unwrap();
            agg.add(restored, &more, &times).unwrap();
            prop_assert_eq!(agg.finish(original).unwrap(), agg.finish(restored).unwrap(), "{}", plugin);
            prop_assert!(agg.restore(&bytes, version + 1).is_err(), "{} accepted an unknown state version", plugin);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every quantile `percentiles` reports is within its relative accuracy of
    /// the exact order statistic of rank floor(q * (n - 1)), the bound the
    /// plugins page documents (docs/plugins/README.md), for skewed, signed and
    /// clustered data alike.
    #[test]
    fn percentiles_stay_within_the_documented_bound(
        mut values in prop::collection::vec(
            prop_oneof![
                1.0..100.0f64,
                (0.0..12.0f64).prop_map(f64::exp),
                -5e4..-1e-2f64,
                (1u32..20).prop_map(f64::from),
            ],
            1..2_000,
        ),
        accuracy in prop_oneof![Just(0.01), Just(0.005), Just(0.05)],
    ) {
        let quantiles = [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
        let config = format!(r#"{{"quantiles":{quantiles:?},"relative_accuracy":{accuracy}}}"#);
        let mut agg = open("percentiles", &config);
        let acc = feed(agg.as_mut(), &values, 256);
        let got = agg.finish(acc).unwrap();
        values.sort_by(f64::total_cmp);
        for (q, est) in quantiles.iter().zip(got) {
            let exact = values[(q * (values.len() - 1) as f64) as usize];
            let est = est.expect("a quantile of a non-empty window");
            prop_assert!(
                (est - exact).abs() <= accuracy * exact.abs() * (1.0 + 1e-12),
                "q={} estimate {} exact {} accuracy {}", q, est, exact, accuracy
            );
        }
    }
}

/// One random event: key, time, value.
type Ev = (u32, i64, f64);

fn run_operator(
    spec: WindowSpec,
    delay: i64,
    events: &[Ev],
    aggs: Vec<Box<dyn Aggregation>>,
) -> Vec<WindowResult> {
    let aggs = aggs.into_iter().map(PerWindow::boxed).collect();
    let mut op = WindowOperator::new(spec, 0, aggs, default_trigger(), 32, 5);
    let mut wm = Watermarks::new(delay, 1);
    let mut out = Vec::new();
    for &(key, time, value) in events {
        let outcome = op
            .on_event(key, time, &[Some(value)], wm.current(), &mut out)
            .unwrap();
        assert_eq!(outcome, sluice_core::window::EventOutcome::Accepted);
        if let Some(w) = wm.observe(0, time) {
            op.on_watermark(w, &mut out).unwrap();
        }
    }
    op.on_watermark(wm.finish(), &mut out).unwrap();
    out
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((0u32..3, 0i64..60_000, -1e3..1e3f64), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Sliding windows built from panes give what computing each window from
    /// its own events gives.
    #[test]
    fn sliding_by_panes_equals_naive_windows(
        mut events in events(),
        (size, slide) in prop_oneof![Just((10_000, 5_000)), Just((10_000, 4_000)), Just((9_000, 3_000)), Just((6_000, 1_000)), Just((5_000, 5_000))],
    ) {
        // Sorted input with no late events: every window fires once, on time.
        events.sort_by_key(|e| e.1);
        let config = r#"{"quantiles":[0.5,0.99]}"#;
        let spec = WindowSpec::Sliding { size, slide, offset: 0 };
        let results = run_operator(spec, 0, &events, vec![open("stats", config)]);

        let mut naive = open("stats", config);
        let mut expected = Vec::new();
        let mut starts: Vec<(u32, i64)> = Vec::new();
        for &(key, t, _) in &events {
            let last = t - t.rem_euclid(slide);
            let mut s = last;
            while s > t - size {
                starts.push((key, s));
                s -= slide;
            }
        }
        starts.sort_by_key(|&(key, s)| (s + size, key));
        starts.dedup();
        for (key, start) in starts {
            let vals: Vec<f64> = events.iter().filter(|e| e.0 == key && e.1 >= start && e.1 < start + size).map(|e| e.2).collect();
            let acc = feed(naive.as_mut(), &vals, 1000);
            expected.push((key, start, naive.finish(acc).unwrap()));
            naive.release(acc).unwrap();
        }
        prop_assert_eq!(results.len(), expected.len());
        for (r, (key, start, want)) in results.iter().zip(&expected) {
            prop_assert_eq!(r.emit, EmitKind::OnTime);
            prop_assert_eq!((r.key, r.window.start, r.window.end), (*key, *start, *start + size));
            assert_outputs_close(naive.as_ref(), &r.numbers()[0], want);
        }
    }
}

/// One event of the partials test: key, event time, integer value, and how
/// far (ms) it is delayed on arrival.
type Delayed = (u32, i64, i64, i64);

/// Runs `events` in arrival order (time plus delay) through a sliding-window
/// operator with allowed lateness and an optional early trigger (fires every
/// `early` elements), with sliding partials on or off. Events too late for
/// every window are left out, as a pipeline would. Returns the results and
/// the most partial accumulators held at any watermark.
fn run_partials(
    spec: WindowSpec,
    lateness: i64,
    delay: i64,
    events: &[Delayed],
    early: Option<u32>,
    partials: bool,
) -> (Vec<WindowResult>, usize) {
    let triggers = match early {
        None => default_trigger(),
        Some(n) => {
            let config = format!(r#"{{"every_events":{n}}}"#);
            Triggers::new(
                native::trigger("early", &config).expect("opens"),
                Vec::new(),
                &PluginLimits::default(),
            )
        }
    };
    let aggs = [
        open("count", "{}"),
        open("sum", "{}"),
        open("max", "{}"),
        open("percentiles", r#"{"quantiles":[0.5,0.9]}"#),
        open("stats", "{}"),
    ]
    .into_iter()
    .map(PerWindow::boxed)
    .collect();
    // A small batch, so that panes are flushed at many points.
    let mut op = WindowOperator::new(spec, lateness, aggs, triggers, 3, 5);
    op.set_sliding_partials(partials);
    let mut arrival: Vec<&Delayed> = events.iter().collect();
    arrival.sort_by_key(|e| (e.1 + e.3, e.0));
    let mut wm = Watermarks::new(delay, 1);
    let mut out = Vec::new();
    let mut held = 0;
    for &&(key, time, value, _) in &arrival {
        op.on_event(key, time, &[Some(value as f64); 5], wm.current(), &mut out)
            .unwrap();
        if let Some(w) = wm.observe(0, time) {
            op.on_watermark(w, &mut out).unwrap();
            held = held.max(op.sliding_partials_held());
        }
    }
    op.on_watermark(wm.finish(), &mut out).unwrap();
    // Every pane is closed at the end, and so every partial with it.
    assert_eq!(op.sliding_partials_held(), 0, "partials left behind");
    (out, held)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Sliding windows from partial aggregates give what merging every pane
    /// afresh gives: small slides (many panes per window), several panes per
    /// slide, offsets, out-of-order events (some behind the watermark,
    /// changing panes already folded into partials), late firings within
    /// the allowed lateness, early firings, several keys. Counts, integer
    /// sums, maxima and percentiles must be identical; floating-point
    /// moments equal up to rounding (partials group the merges differently).
    #[test]
    fn sliding_partials_equal_plain_pane_merges(
        events in prop::collection::vec((0u32..3, 0i64..20_000, -50i64..50, prop_oneof![3 => Just(0i64), 1 => 0i64..2_500]), 1..250),
        (size, slide) in prop_oneof![Just((3_000, 100)), Just((2_000, 300)), Just((2_500, 1_000)), Just((1_000, 1_000)), Just((4_000, 250))],
        offset in prop_oneof![Just(0i64), Just(50i64)],
        lateness in prop_oneof![Just(0i64), Just(1_500i64)],
        early in prop_oneof![3 => Just(None), 1 => Just(Some(2u32))],
    ) {
        let spec = WindowSpec::Sliding { size, slide, offset };
        let delay = 300;
        let (plain, _) = run_partials(spec, lateness, delay, &events, early, false);
        let (fast, held) = run_partials(spec, lateness, delay, &events, early, true);
        prop_assert_eq!(plain.len(), fast.len());
        let stats = open("stats", "{}");
        for (p, f) in plain.iter().zip(&fast) {
            prop_assert_eq!((p.key, p.window, p.emit), (f.key, f.window, f.emit));
            prop_assert_eq!(&p.errors, &f.errors);
            prop_assert_eq!(&p.outputs[..4], &f.outputs[..4]);
            assert_outputs_close(stats.as_ref(), &f.numbers()[4], &p.numbers()[4]);
        }
        // Memory: per key and aggregation, the blocks (of one window's
        // length) holding open panes, each with at most one partial per
        // window start and per window end.
        let blocks = 2 + (lateness + 2_500 + delay) / size + 1;
        let bound = 3 * 5 * blocks * 2 * (size / slide + 1);
        prop_assert!(held as i64 <= bound, "{held} partials held, bound {bound}");
    }
}
