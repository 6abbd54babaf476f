//! Mergeable summary statistics for plugins: count, sum, mean, extremes and
//! variance, accurate on long windows and independent of how values are batched.

use serde::{Deserialize, Serialize};

/// A floating-point sum with Neumaier's compensation.
///
/// A window of a million latencies summed naively loses the low digits of
/// every small value added to a large total; the compensation term keeps
/// the error near one rounding of the final result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// Adds values in order: the same sum as [`Self::add`] on each, four
    /// values an iteration (why: [`Moments::add_all`]).
    pub fn add_all(&mut self, values: &[f64]) {
        in_fours(values, |x| self.add(x));
    }

    /// Adds another sum.
    pub fn merge(&mut self, other: &CompensatedSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    /// The sum so far.
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Calls `add` on each value in order, four values an iteration of the
/// loop (why: [`Moments::add_all`]).
#[inline(always)]
fn in_fours(values: &[f64], mut add: impl FnMut(f64)) {
    let mut fours = values.chunks_exact(4);
    for four in &mut fours {
        add(four[0]);
        add(four[1]);
        add(four[2]);
        add(four[3]);
    }
    for &x in fours.remainder() {
        add(x);
    }
}

/// The smaller of `a` and `b` as C's `fmin` gives it: a NaN loses to a
/// number, and -0 is below +0.
///
/// Compiled to wasm, `f64::min` is a call to the C library's `fmin` (wasm's
/// own `f64.min` returns NaN for a NaN operand), and in a plugin every call
/// is also a check of the sandbox's deadline; this compiles to a compare.
/// The sign rule keeps the results those `fmin` gave.
#[inline(always)]
pub fn min_of(a: f64, b: f64) -> f64 {
    if b < a || a.is_nan() || (b == a && b.is_sign_negative()) {
        b
    } else {
        a
    }
}

/// The larger of `a` and `b` as C's `fmax` gives it: a NaN loses to a
/// number, and +0 is above -0 (see [`min_of`] for why it is not `f64::max`).
#[inline(always)]
pub fn max_of(a: f64, b: f64) -> f64 {
    if b > a || a.is_nan() || (b == a && b.is_sign_positive()) {
        b
    } else {
        a
    }
}

/// Count, sum, mean, minimum, maximum and variance of a stream of values.
///
/// Values are added one at a time (Welford's update), so results do not
/// depend on how the host splits them into batches; partial states combine
/// with Chan et al.'s pairwise formula, which is what sliding panes and
/// session merges need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    sum: CompensatedSum,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            sum: CompensatedSum::default(),
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        self.sum.add(x);
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.min = min_of(self.min, x);
        self.max = max_of(self.max, x);
    }

    /// Adds values in order: the same state as [`Self::add`] on each.
    ///
    /// Shaped for the sandbox: at each loop's back-edge a plugin checks its
    /// deadline, on a path that may call into the host, so the compiled
    /// loop keeps its running values in memory across that check, which
    /// puts a store and a load on the mean's chain of dependent operations.
    /// Taking four values an iteration pays that once per four.
    pub fn add_all(&mut self, values: &[f64]) {
        in_fours(values, |x| self.add(x));
    }

    /// Folds in the moments of other values.
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.sum.merge(&other.sum);
        self.min = min_of(self.min, other.min);
        self.max = max_of(self.max, other.max);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values (0 for none).
    pub fn sum(&self) -> f64 {
        self.sum.value()
    }

    /// Arithmetic mean; `None` for no values.
    ///
    /// Taken from the compensated sum rather than the running mean, so that it
    /// agrees with `sum / count` to the last digit a reader would check.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.value() / self.count as f64)
    }

    /// Smallest value.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Population variance (divides by n); `None` for no values.
    pub fn var_pop(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).max(0.0))
    }

    /// Sample variance (divides by n - 1); `None` for fewer than two values.
    pub fn var_samp(&self) -> Option<f64> {
        (self.count > 1).then(|| (self.m2 / (self.count - 1) as f64).max(0.0))
    }

    /// Population standard deviation.
    pub fn stddev_pop(&self) -> Option<f64> {
        self.var_pop().map(f64::sqrt)
    }

    /// Sample standard deviation.
    pub fn stddev_samp(&self) -> Option<f64> {
        self.var_samp().map(f64::sqrt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_var(values: &[f64], ddof: f64) -> f64 {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - ddof)
    }

    #[test]
    fn empty_and_single_value_are_undefined_where_they_should_be() {
        let mut m = Moments::default();
        assert_eq!(
            (m.count(), m.sum(), m.mean(), m.var_pop()),
            (0, 0.0, None, None)
        );
        m.add(4.0);
        assert_eq!(
            (m.mean(), m.min(), m.max()),
            (Some(4.0), Some(4.0), Some(4.0))
        );
        assert_eq!((m.var_pop(), m.var_samp()), (Some(0.0), None));
    }

    #[test]
    fn large_offset_does_not_destroy_the_variance() {
        // The textbook sum-of-squares formula returns garbage (even negative
        // numbers) here; Welford keeps the exact answer 30 / 4 = 7.5.
        let mut m = Moments::default();
        m.add_all(&[1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0]);
        assert_eq!(m.var_pop(), Some(22.5));
        assert_eq!(m.var_samp(), Some(30.0));
    }

    /// `min_of` and `max_of` give what C's `fmin` and `fmax` give, which
    /// `f64::min` and `f64::max` compiled to wasm call.
    #[test]
    fn min_and_max_are_those_of_fmin_and_fmax() {
        let bits = |x: f64| x.to_bits();
        let cases = [
            (1.0, 2.0, 1.0, 2.0),
            (2.0, 1.0, 1.0, 2.0),
            (-3.5, 3.5, -3.5, 3.5),
            (0.0, -0.0, -0.0, 0.0),
            (-0.0, 0.0, -0.0, 0.0),
            (f64::NAN, 5.0, 5.0, 5.0),
            (5.0, f64::NAN, 5.0, 5.0),
            (f64::INFINITY, 7.0, 7.0, f64::INFINITY),
            (f64::NEG_INFINITY, 7.0, f64::NEG_INFINITY, 7.0),
        ];
        for (a, b, min, max) in cases {
            assert_eq!(bits(min_of(a, b)), bits(min), "min_of({a}, {b})");
            assert_eq!(bits(max_of(a, b)), bits(max), "max_of({a}, {b})");
        }
        assert!(min_of(f64::NAN, f64::NAN).is_nan());
        assert!(max_of(f64::NAN, f64::NAN).is_nan());
    }

    #[test]
    fn compensated_sum_keeps_small_terms() {
        let mut s = CompensatedSum::default();
        s.add(1e16);
        for _ in 0..10 {
            s.add(1.0);
        }
        s.add(-1e16);
        assert_eq!(s.value(), 10.0);
    }

    proptest! {
        /// `add_all` (of moments and of a sum) takes four values an
        /// iteration; every field must still be, bit for bit, that of
        /// adding the values one by one, whatever the batch boundaries,
        /// with signed zeros, NaN and infinities among the values.
        #[test]
        fn add_all_is_adding_each_value(
            values in prop::collection::vec(
                prop_oneof![
                    8 => -1e6..1e6f64,
                    1 => Just(0.0),
                    1 => Just(-0.0),
                    1 => Just(f64::NAN),
                    1 => Just(f64::INFINITY),
                    1 => Just(f64::NEG_INFINITY),
                ],
                0..40,
            ),
            cut in 0usize..40,
        ) {
            let cut = cut.min(values.len());
            let mut one_by_one = Moments::default();
            for &x in &values {
                one_by_one.add(x);
            }
            let mut batched = Moments::default();
            batched.add_all(&values[..cut]);
            batched.add_all(&values[cut..]);
            // Debug shows -0 and NaN, which `==` on f64 does not tell apart.
            prop_assert_eq!(format!("{batched:?}"), format!("{one_by_one:?}"));
            let mut sum = CompensatedSum::default();
            values.iter().for_each(|&x| sum.add(x));
            let mut sum_batched = CompensatedSum::default();
            sum_batched.add_all(&values[..cut]);
            sum_batched.add_all(&values[cut..]);
            prop_assert_eq!(format!("{sum_batched:?}"), format!("{sum:?}"));
        }

        #[test]
        fn merge_matches_sequential(values in prop::collection::vec(-1e6..1e6f64, 2..200), cut in 0usize..200) {
            let cut = cut.min(values.len());
            let mut whole = Moments::default();
            whole.add_all(&values);
            let (mut a, mut b) = (Moments::default(), Moments::default());
            a.add_all(&values[..cut]);
            b.add_all(&values[cut..]);
            a.merge(&b);
            prop_assert_eq!(a.count(), whole.count());
            prop_assert_eq!((a.min(), a.max()), (whole.min(), whole.max()));
            let var = exact_var(&values, 1.0);
            let tol = 1e-9 * var.max(1.0);
            prop_assert!((a.var_samp().unwrap() - var).abs() <= tol);
            prop_assert!((whole.var_samp().unwrap() - var).abs() <= tol);
        }
    }
}
