// The `{name}` sluice plugin: the mean of the values above a threshold.
//
// The exported `aggregator` object is the WIT interface; its classes are the
// WIT resources. Edit them; then `./build.sh` and
// `sluice plugin test {file}.wasm --config '{"above": 10}'`.

class Aggregation {
  constructor(above) {
    this.above = above;
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

  outputs() {
    return [
      { name: 'count', kind: 'integer', description: 'values above the threshold' },
      { name: 'mean', kind: 'float', description: 'their mean; null when there are none' },
    ];
  }

  create() {
    return new Accumulator(this.above);
  }

  restore(state, stateVersion) {
    if (stateVersion !== 1 || state.length !== 16) throw `cannot read state version ${stateVersion}`;
    const view = new DataView(state.buffer, state.byteOffset, 16);
    const acc = new Accumulator(this.above);
    acc.count = view.getFloat64(0, true);
    acc.sum = view.getFloat64(8, true);
    return acc;
  }
}

class Accumulator {
  constructor(above) {
    this.above = above;
    this.count = 0;
    this.sum = 0;
  }

  // values: Float64Array; times: BigInt64Array (epoch milliseconds).
  add(values, _times) {
    for (const v of values) {
      if (v > this.above) {
        this.count += 1;
        this.sum += v;
      }
    }
  }

  merge(other) {
    this.count += other.count;
    this.sum += other.sum;
  }

  snapshot() {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setFloat64(0, this.count, true);
    view.setFloat64(8, this.sum, true);
    return bytes;
  }

  // undefined is `none`, written as null.
  finish() {
    return [this.count, this.count > 0 ? this.sum / this.count : undefined];
  }
}

export const aggregator = {
  info() {
    return {
      name: '{name}',
      version: '0.1.0',
      description: 'Mean of the values above a threshold.',
      stateVersion: 1,
      mergeable: true,
      commutative: true,
      configHelp: '{"above": 0}',
    };
  },
  Aggregation,
  Accumulator,
};
