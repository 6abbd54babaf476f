"""EWMA and exponentially weighted variance, mergeable and snapshotable.

State per window: total weight `w` (the newest value weighs 1, the one
before it 1 - alpha, ...), the weighted mean and `m2`, the weighted sum of
squared deviations, updated West's way so that equal values give a variance
of exactly 0. `a.merge(b)` means "b's values came after a's": a's weights
decay by (1 - alpha) ** len(b), then the two weighted summaries combine
with Chan's formula. That is associative, not commutative: it suits
tumbling windows, and sliding ones, whose panes the host merges in time
order; sessions that merge may be combined in another order.
"""

import json
import struct

from componentize_py_types import Err
from wit_world.exports import aggregator
from wit_world.imports.types import OutputKind, OutputSpec

STATE_VERSION = 1
# count (u64), weight, mean, m2 (f64), little-endian.
_LAYOUT = struct.Struct("<Qddd")


class Aggregation(aggregator.Aggregation):
    """A configured EWMA: the decay shared by all windows."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    @classmethod
    def open(cls, config: str) -> "Aggregation":
        try:
            parsed = json.loads(config)
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")
        if not isinstance(parsed, dict):
            raise Err("config must be a JSON object")
        unknown = sorted(set(parsed) - {"alpha"})
        if unknown:
            raise Err(f"unknown key `{unknown[0]}` (expected `alpha`)")
        alpha = parsed.get("alpha", 0.1)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise Err("alpha: must be a number with 0 < alpha <= 1")
        return cls(float(alpha))

    def outputs(self) -> list[OutputSpec]:
        return [
            OutputSpec("count", OutputKind.INTEGER, "values seen"),
            OutputSpec("mean", OutputKind.FLOAT, "exponentially weighted mean; null for no values"),
            OutputSpec("variance", OutputKind.FLOAT, "exponentially weighted variance; null for no values"),
            OutputSpec("stddev", OutputKind.FLOAT, "square root of the variance; null for no values"),
        ]

    def create(self) -> "Accumulator":
        return Accumulator(self.alpha)

    def restore(self, state: bytes, state_version: int) -> "Accumulator":
        if state_version != STATE_VERSION:
            raise Err(f"state version {state_version} is not {STATE_VERSION}")
        if len(state) != _LAYOUT.size:
            raise Err(f"state is {len(state)} bytes, not {_LAYOUT.size}")
        acc = Accumulator(self.alpha)
        acc.count, acc.weight, acc.mean, acc.m2 = _LAYOUT.unpack(state)
        return acc


class Accumulator(aggregator.Accumulator):
    """One window's weighted summary."""

    def __init__(self, alpha: float):
        self.decay = 1.0 - alpha
        self.count = 0
        self.weight = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, values: list[float], times: list[int]) -> None:
        decay, weight, mean, m2 = self.decay, self.weight, self.mean, self.m2
        for x in values:
            weight = weight * decay + 1.0
            delta = x - mean
            mean += delta / weight
            m2 = m2 * decay + delta * (x - mean)
        self.count += len(values)
        self.weight, self.mean, self.m2 = weight, mean, m2

    def merge(self, other: "Accumulator") -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.weight, self.mean, self.m2 = other.count, other.weight, other.mean, other.m2
            return
        fade = self.decay ** other.count
        w_a, m2_a = self.weight * fade, self.m2 * fade
        weight = w_a + other.weight
        delta = other.mean - self.mean
        self.mean += delta * (other.weight / weight)
        self.m2 = m2_a + other.m2 + delta * delta * (w_a * other.weight / weight)
        self.weight = weight
        self.count += other.count

    def snapshot(self) -> bytes:
        return _LAYOUT.pack(self.count, self.weight, self.mean, self.m2)

    def finish(self) -> list[float | None]:
        if self.count == 0:
            return [0.0, None, None, None]
        variance = max(self.m2 / self.weight, 0.0)
        return [float(self.count), self.mean, variance, variance ** 0.5]
