"""The resources of `{name}`: a configured aggregation and its accumulators."""

import json
import struct

from componentize_py_types import Err
from wit_world.exports import aggregator
from wit_world.imports.types import OutputKind, OutputSpec

STATE = struct.Struct("<Qd")  # count, sum


class Aggregation(aggregator.Aggregation):
    def __init__(self, above: float):
        self.above = above

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

    def outputs(self) -> list[OutputSpec]:
        return [
            OutputSpec("count", OutputKind.INTEGER, "values above the threshold"),
            OutputSpec("mean", OutputKind.FLOAT, "their mean; null when there are none"),
        ]

    def create(self) -> "Accumulator":
        return Accumulator(self.above)

    def restore(self, state: bytes, state_version: int) -> "Accumulator":
        if state_version != 1 or len(state) != STATE.size:
            raise Err(f"cannot read state version {state_version}")
        acc = Accumulator(self.above)
        acc.count, acc.sum = STATE.unpack(state)
        return acc


class Accumulator(aggregator.Accumulator):
    def __init__(self, above: float):
        self.above = above
        self.count = 0
        self.sum = 0.0

    def add(self, values: list[float], times: list[int]) -> None:
        for v in values:
            if v > self.above:
                self.count += 1
                self.sum += v

    def merge(self, other: "Accumulator") -> None:
        self.count += other.count
        self.sum += other.sum

    def snapshot(self) -> bytes:
        return STATE.pack(self.count, self.sum)

    def finish(self) -> list[float | None]:
        mean = self.sum / self.count if self.count else None
        return [float(self.count), mean]
