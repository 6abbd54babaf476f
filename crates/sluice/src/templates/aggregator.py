"""The resource of `{name}`: a configured aggregation and its windows' states.

Interface 0.2 (sluice:plugin@0.2.0): one `Aggregation` keeps the state of
every window the host has open, keyed by the group number the host gives
each window, and each call names the groups it is for.
"""

import json
import struct

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

STATE_VERSION = 1
STATE = struct.Struct("<Qd")  # one window's snapshot: count, sum


class Aggregation(aggregator.Aggregation):
    def __init__(self, above: float):
        self.above = above
        # Group number -> [count, sum] of the values above the threshold.
        # A group with no entry is empty.
        self.groups: dict[int, list] = {}

    @classmethod
    def open(cls, config: str) -> "Aggregation":
        parsed = json.loads(config)
        unknown = set(parsed) - {"above"}
        if unknown:
            raise Err(f"unknown key `{sorted(unknown)[0]}`")
        above = parsed.get("above", 0)
        if isinstance(above, bool) or not isinstance(above, (int, float)):
            raise Err("above: must be a number")
        return cls(float(above))

    def inputs(self) -> list[InputSpec]:
        # One number per event: a pipeline's `field:` binds it.
        return [InputSpec("value", InputKind.FLOAT, False, "the values to average")]

    def outputs(self) -> list[OutputSpec]:
        return [
            OutputSpec("count", OutputKind.INTEGER, "values above the threshold"),
            OutputSpec("mean", OutputKind.FLOAT, "their mean; null when there are none"),
        ]

    def update(self, batch: Rows) -> None:
        # Row i belongs to window batch.groups[i]; column 0 is `value`.
        column = batch.columns[0]
        assert isinstance(column.values, ColumnValues_Float)
        values, validity = column.values.value, column.validity
        for i, group in enumerate(batch.groups):
            # A clear bit in the validity bitmap is a missing value (an
            # empty bitmap: none is missing).
            if validity and not (validity[i // 8] >> (i % 8)) & 1:
                continue
            if values[i] > self.above:
                state = self.groups.setdefault(group, [0, 0.0])
                state[0] += 1
                state[1] += values[i]

    def merge(self, into: list[int], from_: list[int]) -> None:
        # Folds group from_[i] into group into[i]; from_[i] stays as it is.
        for a, b in zip(into, from_):
            other = self.groups.get(b, [0, 0.0])
            state = self.groups.setdefault(a, [0, 0.0])
            state[0] += other[0]
            state[1] += other[1]

    def evaluate(self, groups: list[int]) -> list[OutputValues]:
        # One column per output, one entry per group; None is null.
        counts, means = [], []
        for group in groups:
            count, total = self.groups.get(group, [0, 0.0])
            counts.append(count)
            means.append(total / count if count else None)
        return [OutputValues_Integer(counts), OutputValues_Float(means)]

    def snapshot(self, groups: list[int]) -> list[bytes]:
        return [STATE.pack(*self.groups.get(group, [0, 0.0])) for group in groups]

    def restore(self, groups: list[int], states: list[bytes], state_version: int) -> None:
        refused = []
        for group, state in zip(groups, states):
            if state_version != STATE_VERSION or len(state) != STATE.size:
                self.groups.pop(group, None)
                refused.append(GroupError(group, f"cannot read state version {state_version}"))
            else:
                self.groups[group] = list(STATE.unpack(state))
        if refused:
            raise Err(refused)

    def release(self, groups: list[int]) -> None:
        # The host is done with these windows and may reuse their numbers.
        for group in groups:
            self.groups.pop(group, None)
