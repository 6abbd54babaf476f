// A sluice plugin in JavaScript: counts anomalies against a latency baseline.
//
// A value is an anomaly when its z-score against the configured baseline,
// (value - mean) / stddev, exceeds the threshold in either direction. The
// baseline comes from the config (last week's mean and standard deviation,
// say), so every window is judged by the same yardstick and windows merge
// by adding counts.
//
// Interface 0.2 (wit/v0.2/aggregator.wit): one `Aggregation` object keeps
// the states of every window the host has open, keyed by the group number
// the host gives each window, and each call names the groups it is for.
//
// Built with componentize-js (see scripts/common.sh, build_language_plugin):
// the exported `aggregator` object is the WIT interface of the same name,
// its class `Aggregation` the WIT resource. How WIT types look here:
// list<f64> is a Float64Array, list<u32> a Uint32Array, list<u8> a
// Uint8Array, s64 a BigInt, `none` is undefined, a variant is
// `{ tag, val }`, an enum a string, and a thrown value is a `result` error.

// The snapshot format is the one the 0.1 version of this plugin wrote, so a
// checkpoint taken with it restores here: same layout, same version.
const STATE_VERSION = 1;
// count, high, low (as f64: exact below 2^53) and the largest |z|, little-endian.
const STATE_BYTES = 32;

// One window's counts.
class Counts {
  constructor() {
    this.count = 0;
    this.high = 0;
    this.low = 0;
    this.maxAbsZ = 0;
  }
}

// Whether row `row` has a value: bit `row % 8` of byte `row / 8` of the
// validity bitmap. An empty bitmap means every row has one (always so for a
// required input).
function present(validity, row) {
  return validity.length === 0 || ((validity[row >> 3] >> (row & 7)) & 1) === 1;
}

class Aggregation {
  constructor(mean, stddev, threshold) {
    this.mean = mean;
    this.stddev = stddev;
    this.threshold = threshold;
    // Group number -> Counts. A group with no entry is empty: the host names
    // a new window by a number it has not used or has released.
    this.groups = new Map();
  }

  // `result<aggregation, string>`: a thrown string is the error.
  static open(config) {
    let parsed;
    try {
      parsed = JSON.parse(config);
    } catch (e) {
      throw `config is not JSON: ${e.message}`;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw 'config must be a JSON object';
    }
    for (const key of Object.keys(parsed)) {
      if (!['mean', 'stddev', 'threshold'].includes(key)) {
        throw `unknown key \`${key}\` (expected mean, stddev, threshold)`;
      }
    }
    const number = (key, fallback) => {
      const v = key in parsed ? parsed[key] : fallback;
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw `${key}: must be a finite number${fallback === undefined ? ' (required)' : ''}`;
      }
      return v;
    };
    const mean = number('mean');
    const stddev = number('stddev');
    const threshold = number('threshold', 3);
    if (stddev <= 0) throw 'stddev: must be above 0';
    if (threshold < 0) throw 'threshold: must not be negative';
    return new Aggregation(mean, stddev, threshold);
  }

  // One number per event; a pipeline's `field:` binds it.
  inputs() {
    return [{ name: 'value', kind: 'float', optional: false, description: 'the values to judge' }];
  }

  outputs() {
    return [
      { name: 'count', kind: 'integer', description: 'values seen' },
      { name: 'anomalies', kind: 'integer', description: 'values whose |z| exceeds the threshold' },
      { name: 'high', kind: 'integer', description: 'anomalies above the baseline mean' },
      { name: 'low', kind: 'integer', description: 'anomalies below the baseline mean' },
      { name: 'anomaly_ratio', kind: 'float', description: 'anomalies / count; null for no values' },
      { name: 'max_abs_z', kind: 'float', description: 'largest |z| seen; null for no values' },
    ];
  }

  // The group's state, created empty the first time the group is named.
  state(group) {
    let counts = this.groups.get(group);
    if (counts === undefined) {
      counts = new Counts();
      this.groups.set(group, counts);
    }
    return counts;
  }

  // `batch.groups[i]` is row i's window; `batch.columns[0]` holds the
  // declared input `value` for every row. Event times are not needed.
  update(batch) {
    const column = batch.columns[0];
    if (column.values.tag !== 'float') throw new TypeError('input `value` is declared float');
    const groups = batch.groups;
    // Rows of one window come in arrival order, but windows may interleave.
    // Fold each run of rows of one group in one go: the host usually sends
    // a window's rows together.
    let start = 0;
    while (start < groups.length) {
      let end = start + 1;
      while (end < groups.length && groups[end] === groups[start]) end++;
      this.fold(this.state(groups[start]), column.values.val, column.validity, start, end);
      start = end;
    }
  }

  // Folds rows start..end of `values` into one window's counts, skipping
  // missing values (they are not counted).
  fold(counts, values, validity, start, end) {
    const { mean, stddev, threshold } = this;
    const all = validity.length === 0;
    let { count, high, low, maxAbsZ } = counts;
    for (let i = start; i < end; i++) {
      if (!all && !present(validity, i)) continue;
      const z = (values[i] - mean) / stddev;
      const abs = Math.abs(z);
      if (abs > maxAbsZ) maxAbsZ = abs;
      if (abs > threshold) {
        if (z > 0) high++;
        else low++;
      }
      count++;
    }
    Object.assign(counts, { count, high, low, maxAbsZ });
  }

  // Folds group from[i] into group into[i]; the `from` groups stay as they are.
  merge(into, from) {
    for (let i = 0; i < into.length; i++) {
      if (into[i] === from[i]) throw `cannot merge group ${into[i]} into itself`;
      const other = this.groups.get(from[i]);
      if (other === undefined) continue;
      const counts = this.state(into[i]);
      counts.count += other.count;
      counts.high += other.high;
      counts.low += other.low;
      counts.maxAbsZ = Math.max(counts.maxAbsZ, other.maxAbsZ);
    }
  }

  // One column per declared output, one entry per group asked for:
  // integers as BigInt, `undefined` for none (written as null).
  evaluate(groups) {
    const empty = new Counts();
    const columns = [[], [], [], [], [], []];
    for (const group of groups) {
      const c = this.groups.get(group) ?? empty;
      const anomalies = c.high + c.low;
      const some = c.count > 0;
      columns[0].push(BigInt(c.count));
      columns[1].push(BigInt(anomalies));
      columns[2].push(BigInt(c.high));
      columns[3].push(BigInt(c.low));
      columns[4].push(some ? anomalies / c.count : undefined);
      columns[5].push(some ? c.maxAbsZ : undefined);
    }
    const kinds = ['integer', 'integer', 'integer', 'integer', 'float', 'float'];
    return columns.map((val, o) => ({ tag: kinds[o], val }));
  }

  // Each group's state as bytes; an empty group's restores to an empty one.
  snapshot(groups) {
    const empty = new Counts();
    return Array.from(groups, (group) => {
      const c = this.groups.get(group) ?? empty;
      const bytes = new Uint8Array(STATE_BYTES);
      const view = new DataView(bytes.buffer);
      view.setFloat64(0, c.count, true);
      view.setFloat64(8, c.high, true);
      view.setFloat64(16, c.low, true);
      view.setFloat64(24, c.maxAbsZ, true);
      return bytes;
    });
  }

  // `result<_, list<group-error>>`: the thrown list names each group that
  // could not be restored (and is left empty); the others are restored.
  restore(groups, states, stateVersion) {
    const refused = [];
    for (let i = 0; i < groups.length; i++) {
      const group = groups[i];
      const state = states[i];
      let message;
      if (stateVersion !== STATE_VERSION) {
        message = `state version ${stateVersion} is not ${STATE_VERSION}`;
      } else if (state.length !== STATE_BYTES) {
        message = `state is ${state.length} bytes, not ${STATE_BYTES}`;
      }
      if (message !== undefined) {
        this.groups.delete(group);
        refused.push({ group, message });
        continue;
      }
      const view = new DataView(state.buffer, state.byteOffset, STATE_BYTES);
      const counts = new Counts();
      counts.count = view.getFloat64(0, true);
      counts.high = view.getFloat64(8, true);
      counts.low = view.getFloat64(16, true);
      counts.maxAbsZ = view.getFloat64(24, true);
      // Counts must be whole numbers (evaluate turns them into BigInts).
      const whole = (n) => Number.isSafeInteger(n) && n >= 0;
      if (!whole(counts.count) || !whole(counts.high) || !whole(counts.low) || !(counts.maxAbsZ >= 0)) {
        this.groups.delete(group);
        refused.push({ group, message: 'state holds counts that are not whole numbers' });
        continue;
      }
      this.groups.set(group, counts);
    }
    if (refused.length > 0) throw refused;
  }

  // The host is done with these windows; it may name new ones by the same numbers.
  release(groups) {
    for (const group of groups) this.groups.delete(group);
  }
}

export const aggregator = {
  info() {
    return {
      name: 'zscore',
      version: '0.2.0',
      description:
        'Counts values whose z-score against a configured baseline (mean, stddev) exceeds a threshold, ' +
        'split into high and low, with the largest |z| seen.',
      stateVersion: STATE_VERSION,
      mergeable: true,
      commutative: true,
      configHelp: '{"mean": 800, "stddev": 300 (both required), "threshold": 3 (default)}',
    };
  },
  Aggregation,
};
