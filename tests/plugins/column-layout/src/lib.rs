//! Benchmark guest for the column layout of grouped plugin calls: the same
//! text and float columns, each in two layouts (see `wit/layout.wit`).
//!
//! Every export folds row `i` into the state of group `groups[i]` (a running
//! sum of string lengths and first bytes, or of values), as a grouped
//! aggregation does, so that a layout's cost includes reading the values.

#[cfg(target_arch = "wasm32")]
// The generated export of `text-buffer` takes each list as a pointer and a
// length: eight arguments, as the canonical ABI flattens them.
#[allow(clippy::too_many_arguments)]
mod component {
    wit_bindgen::generate!({
        path: "wit",
        world: "column-layout",
    });

    use std::cell::RefCell;

    thread_local! {
        /// One state per group, grown to the largest group index seen.
        static STATES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
        static SUMS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    }

    fn present(validity: &[u8], row: usize) -> bool {
        validity
            .get(row / 8)
            .is_some_and(|b| b & (1 << (row % 8)) != 0)
    }

    fn fold_text(states: &mut Vec<u64>, group: u32, text: &str) {
        let g = group as usize;
        if states.len() <= g {
            states.resize(g + 1, 0);
        }
        states[g] += text.len() as u64 + u64::from(text.bytes().next().unwrap_or(0));
    }

    fn fold_float(sums: &mut Vec<f64>, group: u32, value: f64) {
        let g = group as usize;
        if sums.len() <= g {
            sums.resize(g + 1, 0.0);
        }
        sums[g] += value;
    }

    struct Layout;

    impl Guest for Layout {
        fn text_per_value(groups: Vec<u32>, values: Vec<Option<String>>) -> u64 {
            STATES.with_borrow_mut(|states| {
                for (group, value) in groups.iter().zip(&values) {
                    if let Some(text) = value {
                        fold_text(states, *group, text);
                    }
                }
                states.iter().sum()
            })
        }

        fn text_buffer(
            groups: Vec<u32>,
            bytes: Vec<u8>,
            offsets: Vec<u32>,
            validity: Vec<u8>,
        ) -> u64 {
            // The host's bytes are checked once, not per value.
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return 0;
            };
            STATES.with_borrow_mut(|states| {
                for (row, group) in groups.iter().enumerate() {
                    if !present(&validity, row) {
                        continue;
                    }
                    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                    if let Some(value) = text.get(start..end) {
                        fold_text(states, *group, value);
                    }
                }
                states.iter().sum()
            })
        }

        fn float_per_value(groups: Vec<u32>, values: Vec<Option<f64>>) -> f64 {
            SUMS.with_borrow_mut(|sums| {
                for (group, value) in groups.iter().zip(&values) {
                    if let Some(v) = value {
                        fold_float(sums, *group, *v);
                    }
                }
                sums.iter().sum()
            })
        }

        fn float_buffer(groups: Vec<u32>, values: Vec<f64>, validity: Vec<u8>) -> f64 {
            SUMS.with_borrow_mut(|sums| {
                for (row, (group, v)) in groups.iter().zip(&values).enumerate() {
                    if present(&validity, row) {
                        fold_float(sums, *group, *v);
                    }
                }
                sums.iter().sum()
            })
        }
    }

    export!(Layout);
}
