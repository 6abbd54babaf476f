"""The `{name}` sluice plugin: the mean of the values above a threshold.

componentize-py finds the interface's free functions in the class
`Aggregator` here and its resource in `aggregator.py`. Edit both; then
`./build.sh` and `sluice plugin test {file}.wasm --config '{"above": 10}'`.
"""

from wit_world import exports
from wit_world.imports.types import PluginInfo

from aggregator import STATE_VERSION


class Aggregator(exports.Aggregator):
    def info(self) -> PluginInfo:
        return PluginInfo(
            name="{name}",
            version="0.1.0",
            description="Mean of the values above a threshold.",
            state_version=STATE_VERSION,
            mergeable=True,
            commutative=True,
            config_help='{"above": 0}',
        )
