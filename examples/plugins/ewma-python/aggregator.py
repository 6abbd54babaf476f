"""EWMA and exponentially weighted variance, mergeable and snapshotable.

State per window: total weight `w` (the newest value weighs 1, the one
before it 1 - alpha, ...), the weighted mean and `m2`, the weighted sum of
squared deviations, updated West's way so that equal values give a variance
of exactly 0. Merging group `b` into group `a` means "b's values came after
a's": a's weights decay by (1 - alpha) ** len(b), then the two weighted
summaries combine with Chan's formula. That is associative, not
commutative: it suits tumbling windows, and sliding ones, whose panes the
host merges in time order; sessions that merge may be combined in another
order.

Interface 0.2 (`wit/v0.2/aggregator.wit`): one `Aggregation` holds the
states of every window the host has open, keyed by the group number the
host gives each window, and every call names the groups it is for.
"""

import json
import struct
from itertools import groupby

from componentize_py_types import Err
from wit_world.exports import aggregator
from wit_world.imports.types import (
    ColumnValues_Float,
    GroupError,
    InputKind,
    InputSpec,
    OutputKind,
    OutputSpec,
    OutputValues,
    OutputValues_Float,
    OutputValues_Integer,
    Rows,
)

# The snapshot format is the one the 0.1 version of this plugin wrote, so a
# checkpoint taken with it restores here: same layout, same version.
STATE_VERSION = 1
# count (u64), weight, mean, m2 (f64), little-endian.
_LAYOUT = struct.Struct("<Qddd")


class Ewma:
    """One window's weighted summary."""

    __slots__ = ("count", "weight", "mean", "m2")

    def __init__(self) -> None:
        self.count = 0
        self.weight = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, values: list[float], decay: float) -> None:
        """Folds `values`, in arrival order, into the summary."""
        weight, mean, m2 = self.weight, self.mean, self.m2
        for x in values:
            weight = weight * decay + 1.0
            delta = x - mean
            mean += delta / weight
            m2 = m2 * decay + delta * (x - mean)
        self.count += len(values)
        self.weight, self.mean, self.m2 = weight, mean, m2

    def merge(self, other: "Ewma", decay: float) -> None:
        """Folds `other`, whose values came after this one's, into it."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.weight, self.mean, self.m2 = other.count, other.weight, other.mean, other.m2
            return
        fade = decay ** other.count
        w_a, m2_a = self.weight * fade, self.m2 * fade
        weight = w_a + other.weight
        delta = other.mean - self.mean
        self.mean += delta * (other.weight / weight)
        self.m2 = m2_a + other.m2 + delta * delta * (w_a * other.weight / weight)
        self.weight = weight
        self.count += other.count


def _present(validity: bytes, row: int) -> bool:
    """Whether row `row` has a value: bit `row % 8` of byte `row // 8`. An
    empty bitmap means every row has one (always so for a required input)."""
    return not validity or (validity[row >> 3] >> (row & 7)) & 1 == 1


class Aggregation(aggregator.Aggregation):
    """A configured EWMA (the decay) and the states of its windows."""

    def __init__(self, alpha: float):
        self.decay = 1.0 - alpha
        # Group number -> state. A group with no entry is empty: the host
        # names a new window by a number it has not used or has released.
        self.groups: dict[int, Ewma] = {}

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

    def inputs(self) -> list[InputSpec]:
        # One number per event; a pipeline's `field:` binds it.
        return [InputSpec("value", InputKind.FLOAT, False, "the values to average, in arrival order")]

    def outputs(self) -> list[OutputSpec]:
        return [
            OutputSpec("count", OutputKind.INTEGER, "values seen"),
            OutputSpec("mean", OutputKind.FLOAT, "exponentially weighted mean; null for no values"),
            OutputSpec("variance", OutputKind.FLOAT, "exponentially weighted variance; null for no values"),
            OutputSpec("stddev", OutputKind.FLOAT, "square root of the variance; null for no values"),
        ]

    def update(self, batch: Rows) -> None:
        column = batch.columns[0]
        if not isinstance(column.values, ColumnValues_Float):
            raise TypeError("input `value` is declared float")
        values, validity = column.values.value, column.validity
        # Rows of one window come in arrival order, but windows may
        # interleave. Fold each run of rows of one group in one go (the
        # host usually sends a window's rows together; `groupby` yields
        # each run of equal group numbers), skipping missing values.
        start = 0
        for group, run in groupby(batch.groups):
            end = start + len(list(run))
            present = values[start:end]
            if validity:
                present = [x for i, x in enumerate(present, start) if _present(validity, i)]
            if present:
                state = self.groups.get(group)
                if state is None:
                    state = self.groups[group] = Ewma()
                state.add(present, self.decay)
            start = end

    def merge(self, into: list[int], from_: list[int]) -> None:
        for a, b in zip(into, from_):
            if a == b:
                raise Err(f"cannot merge group {a} into itself")
            other = self.groups.get(b)
            if other is None:
                continue
            state = self.groups.get(a)
            if state is None:
                state = self.groups[a] = Ewma()
            # `other` is read, never changed: the host keeps group `b`.
            state.merge(other, self.decay)

    def evaluate(self, groups: list[int]) -> list[OutputValues]:
        # One column per declared output, one entry per group asked for.
        counts: list[int | None] = []
        means: list[float | None] = []
        variances: list[float | None] = []
        stddevs: list[float | None] = []
        for group in groups:
            state = self.groups.get(group)
            if state is None or state.count == 0:
                counts.append(0)
                means.append(None)
                variances.append(None)
                stddevs.append(None)
                continue
            variance = max(state.m2 / state.weight, 0.0)
            counts.append(state.count)
            means.append(state.mean)
            variances.append(variance)
            stddevs.append(variance ** 0.5)
        return [
            OutputValues_Integer(counts),
            OutputValues_Float(means),
            OutputValues_Float(variances),
            OutputValues_Float(stddevs),
        ]

    def snapshot(self, groups: list[int]) -> list[bytes]:
        # An empty group snapshots as zeros, which restore to an empty group.
        empty = Ewma()
        return [
            _LAYOUT.pack(s.count, s.weight, s.mean, s.m2)
            for s in (self.groups.get(group, empty) for group in groups)
        ]

    def restore(self, groups: list[int], states: list[bytes], state_version: int) -> None:
        refused: list[GroupError] = []
        for group, state in zip(groups, states):
            if state_version != STATE_VERSION:
                problem = f"state version {state_version} is not {STATE_VERSION}"
            elif len(state) != _LAYOUT.size:
                problem = f"state is {len(state)} bytes, not {_LAYOUT.size}"
            else:
                restored = Ewma()
                restored.count, restored.weight, restored.mean, restored.m2 = _LAYOUT.unpack(state)
                self.groups[group] = restored
                continue
            # A group that cannot be restored is left empty, and named.
            self.groups.pop(group, None)
            refused.append(GroupError(group, problem))
        if refused:
            raise Err(refused)

    def release(self, groups: list[int]) -> None:
        for group in groups:
            self.groups.pop(group, None)
