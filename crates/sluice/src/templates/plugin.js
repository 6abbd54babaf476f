// The `{name}` sluice plugin: the mean of the values above a threshold.
//
// Interface 0.2 (sluice:plugin@0.2.0): the exported `aggregator` object is
// the WIT interface, its class `Aggregation` the WIT resource, which keeps
// the state of every window the host has open, keyed by the group number
// the host gives each window. Edit it; then `./build.sh` and
// `sluice plugin test {file}.wasm --config '{"above": 10}'`.

const STATE_VERSION = 1;
const STATE_BYTES = 16; // one window's snapshot: count and sum, two f64

class Aggregation {
  constructor(above) {
    this.above = above;
    // Group number -> { count, sum }. A group with no entry is empty.
    this.groups = new Map();
  }

  // result<aggregation, string>: a thrown string is the error.
  static open(config) {
    const parsed = JSON.parse(config);
    for (const key of Object.keys(parsed)) {
      if (key !== 'above') throw `unknown key \`${key}\``;
    }
    const above = parsed.above ?? 0;
    if (typeof above !== 'number') throw 'above: must be a number';
    return new Aggregation(above);
  }

  // One number per event: a pipeline's `field:` binds it.
  inputs() {
    return [{ name: 'value', kind: 'float', optional: false, description: 'the values to average' }];
  }

  outputs() {
    return [
      { name: 'count', kind: 'integer', description: 'values above the threshold' },
      { name: 'mean', kind: 'float', description: 'their mean; null when there are none' },
    ];
  }

  state(group) {
    let state = this.groups.get(group);
    if (state === undefined) {
      state = { count: 0, sum: 0 };
      this.groups.set(group, state);
    }
    return state;
  }

  // Row i belongs to window batch.groups[i] (a Uint32Array); column 0 is
  // `value`: { tag: 'float', val: Float64Array }, with a validity bitmap
  // (Uint8Array) in which a clear bit is a missing value; empty when none is.
  update(batch) {
    const { values, validity } = batch.columns[0];
    for (let i = 0; i < batch.groups.length; i++) {
      if (validity.length > 0 && ((validity[i >> 3] >> (i & 7)) & 1) === 0) continue;
      const v = values.val[i];
      if (v > this.above) {
        const state = this.state(batch.groups[i]);
        state.count += 1;
        state.sum += v;
      }
    }
  }

  // Folds group from[i] into group into[i]; from[i] stays as it is.
  merge(into, from) {
    for (let i = 0; i < into.length; i++) {
      const other = this.groups.get(from[i]) ?? { count: 0, sum: 0 };
      const state = this.state(into[i]);
      state.count += other.count;
      state.sum += other.sum;
    }
  }

  // One column per output, one entry per group: integers as BigInt,
  // undefined for none (written as null).
  evaluate(groups) {
    const counts = [];
    const means = [];
    for (const group of groups) {
      const { count, sum } = this.groups.get(group) ?? { count: 0, sum: 0 };
      counts.push(BigInt(count));
      means.push(count > 0 ? sum / count : undefined);
    }
    return [
      { tag: 'integer', val: counts },
      { tag: 'float', val: means },
    ];
  }

  snapshot(groups) {
    return Array.from(groups, (group) => {
      const { count, sum } = this.groups.get(group) ?? { count: 0, sum: 0 };
      const bytes = new Uint8Array(STATE_BYTES);
      const view = new DataView(bytes.buffer);
      view.setFloat64(0, count, true);
      view.setFloat64(8, sum, true);
      return bytes;
    });
  }

  // result<_, list<group-error>>: a thrown list names the groups that could
  // not be restored (they are left empty).
  restore(groups, states, stateVersion) {
    const refused = [];
    groups.forEach((group, i) => {
      const state = states[i];
      const view = new DataView(state.buffer, state.byteOffset, state.length);
      const count = state.length === STATE_BYTES ? view.getFloat64(0, true) : NaN;
      if (stateVersion !== STATE_VERSION || !Number.isSafeInteger(count) || count < 0) {
        this.groups.delete(group);
        refused.push({ group, message: `cannot read state version ${stateVersion}` });
      } else {
        this.groups.set(group, { count, sum: view.getFloat64(8, true) });
      }
    });
    if (refused.length > 0) throw refused;
  }

  // The host is done with these windows and may reuse their numbers.
  release(groups) {
    for (const group of groups) this.groups.delete(group);
  }
}

export const aggregator = {
  info() {
    return {
      name: '{name}',
      version: '0.1.0',
      description: 'Mean of the values above a threshold.',
      stateVersion: STATE_VERSION,
      mergeable: true,
      commutative: true,
      configHelp: '{"above": 0}',
    };
  },
  Aggregation,
};
