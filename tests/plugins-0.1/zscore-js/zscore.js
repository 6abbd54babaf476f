// A sluice plugin in JavaScript: counts anomalies against a latency baseline.
//
// A value is an anomaly when its z-score against the configured baseline,
// (value - mean) / stddev, exceeds the threshold in either direction. The
// baseline comes from the config (last week's mean and standard deviation,
// say), so every window is judged by the same yardstick and accumulators
// merge by adding counts.
//
// Built with componentize-js (see scripts/common.sh, build_language_plugins):
// the exported `aggregator` object is the WIT interface of the same name, its
// classes are the WIT resources.

const STATE_VERSION = 1;
// count, high, low (as f64: exact below 2^53) and the largest |z|, little-endian.
const STATE_BYTES = 32;

class Aggregation {
  constructor(mean, stddev, threshold) {
    this.mean = mean;
    this.stddev = stddev;
    this.threshold = threshold;
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

  create() {
    return new Accumulator(this);
  }

  restore(state, stateVersion) {
    if (stateVersion !== STATE_VERSION) {
      throw `state version ${stateVersion} is not ${STATE_VERSION}`;
    }
    if (state.length !== STATE_BYTES) {
      throw `state is ${state.length} bytes, not ${STATE_BYTES}`;
    }
    const view = new DataView(state.buffer, state.byteOffset, STATE_BYTES);
    const acc = new Accumulator(this);
    acc.count = view.getFloat64(0, true);
    acc.high = view.getFloat64(8, true);
    acc.low = view.getFloat64(16, true);
    acc.maxAbsZ = view.getFloat64(24, true);
    return acc;
  }
}

class Accumulator {
  constructor(aggregation) {
    this.config = aggregation;
    this.count = 0;
    this.high = 0;
    this.low = 0;
    this.maxAbsZ = 0;
  }

  // `values` is a Float64Array; event times (BigInt64Array) are not needed.
  add(values, _times) {
    const { mean, stddev, threshold } = this.config;
    let { high, low, maxAbsZ } = this;
    for (let i = 0; i < values.length; i++) {
      const z = (values[i] - mean) / stddev;
      const abs = Math.abs(z);
      if (abs > maxAbsZ) maxAbsZ = abs;
      if (abs > threshold) {
        if (z > 0) high++;
        else low++;
      }
    }
    this.count += values.length;
    this.high = high;
    this.low = low;
    this.maxAbsZ = maxAbsZ;
  }

  merge(other) {
    this.count += other.count;
    this.high += other.high;
    this.low += other.low;
    this.maxAbsZ = Math.max(this.maxAbsZ, other.maxAbsZ);
  }

  snapshot() {
    const bytes = new Uint8Array(STATE_BYTES);
    const view = new DataView(bytes.buffer);
    view.setFloat64(0, this.count, true);
    view.setFloat64(8, this.high, true);
    view.setFloat64(16, this.low, true);
    view.setFloat64(24, this.maxAbsZ, true);
    return bytes;
  }

  // `option<f64>`: undefined is none.
  finish() {
    const anomalies = this.high + this.low;
    const some = this.count > 0;
    return [
      this.count,
      anomalies,
      this.high,
      this.low,
      some ? anomalies / this.count : undefined,
      some ? this.maxAbsZ : undefined,
    ];
  }
}

export const aggregator = {
  info() {
    return {
      name: 'zscore',
      version: '0.1.0',
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
  Accumulator,
};
