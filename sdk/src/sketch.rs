//! Mergeable quantile estimates with a relative-error guarantee.
//!
//! Built on DDSketch (the `sketches-ddsketch` crate): values fall into
//! logarithmic buckets of width set by the relative accuracy `alpha`, so the
//! estimate of any quantile is within `alpha * |x|` of the exact order
//! statistic `x`, however skewed the data, and two sketches merge exactly by
//! adding bucket counts. Latency distributions are long-tailed, which is the
//! case a relative bound serves and a rank bound (t-digest, KLL) does not.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sketches_ddsketch::{Config, DDSketch};

/// Buckets per sign kept before the lowest ones collapse. With `alpha = 0.01`
/// this covers 1e-9 to beyond 1e8 at full accuracy.
const MAX_BINS: u32 = 4096;

/// Magnitudes below this count as zero.
const MIN_VALUE: f64 = 1e-9;

/// Values a sketch keeps as they are before it builds its buckets. A
/// DDSketch's buckets span its values' range densely (about 220 of 8 bytes
/// for latencies from 50 ms to 4 s at 1%), which is 2 KiB for a window of
/// five events; with many keys most windows are that small. The values are
/// put into buckets at the 65th, or whenever the buckets are needed, giving
/// exactly the sketch of adding them one by one.
const SMALL: usize = 64;

/// A quantile sketch: the estimate of quantile `q` is within `alpha` relative
/// error of the exact order statistic of rank `floor(q * (n - 1))` (0-based)
/// of the values added, as long as every value's magnitude lies between
/// 1e-9 and `1e-9 * (1 + alpha)^4096` (beyond 1e8 for the default accuracy).
///
/// Up to 64 values are kept as they are (see `SMALL`), so a window of a
/// few events costs a few bytes; its snapshot is the DDSketch all the same,
/// so the bytes and every estimate are those of a sketch built value by
/// value.
#[derive(Clone)]
pub struct QuantileSketch {
    alpha: f64,
    /// The values added while there is no `sketch`.
    small: Vec<f64>,
    sketch: Option<Box<DDSketch>>,
}

/// The form snapshots take: the DDSketch of every value added.
#[derive(Serialize)]
struct Wire<'a> {
    sketch: &'a DDSketch,
}

#[derive(Deserialize)]
struct WireOwned {
    sketch: DDSketch,
}

impl Serialize for QuantileSketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.sketch {
            Some(sketch) => Wire { sketch }.serialize(serializer),
            None => Wire {
                sketch: &self.built(),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for QuantileSketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireOwned::deserialize(deserializer)?;
        Ok(QuantileSketch {
            // Only used to build buckets, which a restored sketch has.
            alpha: 0.01,
            small: Vec::new(),
            sketch: Some(Box::new(wire.sketch)),
        })
    }
}

impl QuantileSketch {
    /// An empty sketch with relative accuracy `alpha`, which must lie in (0, 1).
    pub fn new(alpha: f64) -> Result<Self, String> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(format!("relative_accuracy must be in (0, 1), got {alpha}"));
        }
        Ok(QuantileSketch {
            alpha,
            small: Vec::new(),
            sketch: None,
        })
    }

    /// The DDSketch of the values kept as they are.
    fn built(&self) -> DDSketch {
        let mut sketch = DDSketch::new(Config::new(self.alpha, MAX_BINS, MIN_VALUE));
        for &x in &self.small {
            sketch.add(x);
        }
        sketch
    }

    /// The buckets, built from the values kept so far if there are none.
    fn buckets(&mut self) -> &mut DDSketch {
        if self.sketch.is_none() {
            self.sketch = Some(Box::new(self.built()));
            self.small = Vec::new();
        }
        self.sketch
            .get_or_insert_with(|| Box::new(DDSketch::default()))
    }

    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        match &mut self.sketch {
            Some(sketch) => sketch.add(x),
            None if self.small.len() < SMALL => {
                if self.small.len() == self.small.capacity() {
                    // Grow by half, not double: most windows hold a few
                    // values, and spare room is memory each of them keeps.
                    let more = (self.small.len() / 2).clamp(4, SMALL - self.small.len());
                    self.small.reserve_exact(more);
                }
                self.small.push(x)
            }
            None => self.buckets().add(x),
        }
    }

    /// Adds every value of `values`, in order: the same sketch as calling
    /// [`Self::add`] on each, with one loop over the buckets instead of a
    /// call and a branch per value.
    pub fn add_all(&mut self, values: &[f64]) {
        let mut rest = values;
        while self.sketch.is_none() {
            let Some((&x, tail)) = rest.split_first() else {
                return;
            };
            self.add(x);
            rest = tail;
        }
        if let Some(sketch) = &mut self.sketch {
            for &x in rest {
                // What `DDSketch::add` calls: compiled to wasm, `add` is a
                // function of its own that only makes this call, and each
                // call is also a check of the sandbox's deadline.
                sketch.add_with_count(x, 1);
            }
        }
    }

    /// Folds in another sketch of the same accuracy.
    pub fn merge(&mut self, other: &QuantileSketch) -> Result<(), String> {
        match &other.sketch {
            None if self.sketch.is_none() && self.small.len() + other.small.len() <= SMALL => {
                self.small.extend_from_slice(&other.small);
                Ok(())
            }
            None => {
                let buckets = self.buckets();
                for &x in &other.small {
                    buckets.add(x);
                }
                Ok(())
            }
            Some(theirs) => self
                .buckets()
                .merge(theirs)
                .map_err(|e| format!("cannot merge sketches: {e}")),
        }
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        match &self.sketch {
            Some(sketch) => sketch.count() as u64,
            None => self.small.len() as u64,
        }
    }

    /// The estimate of quantile `q` in [0, 1]; `None` for an empty sketch.
    ///
    /// Clamped to the exact minimum and maximum, which the sketch tracks: a
    /// bucket's representative value can lie just outside the data, and a p50
    /// below the window's `min` would puzzle a dashboard reader. Clamping only
    /// moves an estimate towards the exact value, so the bound still holds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let built;
        let sketch = match &self.sketch {
            Some(sketch) => sketch.as_ref(),
            None => {
                built = self.built();
                &built
            }
        };
        let estimate = sketch.quantile(q).ok().flatten()?;
        match (sketch.min(), sketch.max()) {
            (Some(min), Some(max)) => Some(estimate.clamp(min, max)),
            _ => Some(estimate),
        }
    }
}

/// A list of quantiles to report, validated and named for output.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiles {
    qs: Vec<f64>,
    names: Vec<String>,
}

impl Quantiles {
    /// Checks that every quantile is in [0, 1] and that their names differ.
    pub fn new(qs: Vec<f64>) -> Result<Self, String> {
        let mut names: Vec<String> = Vec::with_capacity(qs.len());
        for &q in &qs {
            if !(0.0..=1.0).contains(&q) {
                return Err(format!("quantiles: {q} is not in [0, 1]"));
            }
            let name = quantile_name(q);
            if names.contains(&name) {
                return Err(format!("quantiles: {q} is listed twice (as {name})"));
            }
            names.push(name);
        }
        Ok(Quantiles { qs, names })
    }

    /// The quantiles, in configured order.
    pub fn values(&self) -> &[f64] {
        &self.qs
    }

    /// Output names such as `p50`, `p99.9`, in the same order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether no quantile is asked for.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }
}

/// `0.5` -> `p50`, `0.999` -> `p99.9`, `0.125` -> `p12.5`.
pub fn quantile_name(q: f64) -> String {
    let percent = format!("{:.6}", q * 100.0);
    let trimmed = percent.trim_end_matches('0').trim_end_matches('.');
    format!("p{trimmed}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        let names: Vec<String> = [0.5, 0.95, 0.99, 0.999, 0.125, 0.0, 1.0]
            .iter()
            .map(|&q| quantile_name(q))
            .collect();
        assert_eq!(names, ["p50", "p95", "p99", "p99.9", "p12.5", "p0", "p100"]);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Quantiles::new(vec![1.5]).is_err());
        assert!(Quantiles::new(vec![0.5, 0.5]).is_err());
        assert!(QuantileSketch::new(0.0).is_err());
        assert!(QuantileSketch::new(f64::NAN).is_err());
    }

    proptest! {
        /// Values kept as they are give the estimates, snapshot bytes and
        /// merges of a sketch that put each into its bucket at once.
        #[test]
        fn small_sketches_are_the_sketch_of_their_values(
            values in prop::collection::vec(prop_oneof![-1e6..-1e-3f64, 1e-3..1e6f64], 1..150),
            split in 0usize..150,
        ) {
            let split = split.min(values.len());
            let mut direct = DDSketch::new(Config::new(0.01, MAX_BINS, MIN_VALUE));
            values.iter().for_each(|&v| direct.add(v));
            let mut left = QuantileSketch::new(0.01).unwrap();
            let mut right = QuantileSketch::new(0.01).unwrap();
            values[..split].iter().for_each(|&v| left.add(v));
            values[split..].iter().for_each(|&v| right.add(v));
            left.merge(&right).unwrap();
            // Added one by one, the snapshot is the DDSketch's, byte for byte
            // (a merge's buckets may be laid out otherwise, as DDSketch's own
            // merges are).
            let mut whole = QuantileSketch::new(0.01).unwrap();
            values.iter().for_each(|&v| whole.add(v));
            let bytes = postcard::to_allocvec(&whole).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&Wire { sketch: &direct }).unwrap());
            let back: QuantileSketch = postcard::from_bytes(&postcard::to_allocvec(&left).unwrap()).unwrap();
            for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
                let want = direct.quantile(q).unwrap().map(|e| e.clamp(direct.min().unwrap(), direct.max().unwrap()));
                prop_assert_eq!(left.quantile(q), want);
                prop_assert_eq!(back.quantile(q), want);
            }
            prop_assert_eq!(left.count(), values.len() as u64);
        }

        /// Adding a batch at once gives the bytes of adding each value,
        /// whether the batch starts, crosses or follows the switch from kept
        /// values to buckets.
        #[test]
        fn adding_a_batch_is_adding_each_value(
            values in prop::collection::vec(prop_oneof![-1e6..-1e-3f64, Just(0.0), 1e-3..1e6f64], 0..200),
            cuts in prop::collection::vec(0usize..200, 0..4),
        ) {
            let mut one_by_one = QuantileSketch::new(0.01).unwrap();
            values.iter().for_each(|&v| one_by_one.add(v));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(values.len())).collect();
            cuts.sort_unstable();
            let mut batched = QuantileSketch::new(0.01).unwrap();
            let mut from = 0;
            for cut in cuts.into_iter().chain([values.len()]) {
                batched.add_all(&values[from..cut]);
                from = cut;
            }
            prop_assert_eq!(postcard::to_allocvec(&batched).unwrap(), postcard::to_allocvec(&one_by_one).unwrap());
            prop_assert_eq!(batched.count(), values.len() as u64);
        }

        #[test]
        fn estimate_is_within_the_relative_bound(
            mut values in prop::collection::vec(prop_oneof![-1e6..-1e-3f64, 1e-3..1e6f64], 1..500),
            q in 0.0..=1.0f64,
        ) {
            let mut sketch = QuantileSketch::new(0.01).unwrap();
            values.iter().for_each(|&v| sketch.add(v));
            values.sort_by(f64::total_cmp);
            let exact = values[(q * (values.len() - 1) as f64) as usize];
            let got = sketch.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= 0.01 * exact.abs() * (1.0 + 1e-12), "q={q}: {got} vs {exact}");
        }
    }
}
