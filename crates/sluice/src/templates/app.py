"""The `{name}` sluice plugin: the mean of the values above a threshold.

componentize-py finds the interface's free functions in the class
`Aggregator` here and its resources in `aggregator.py`. Edit both; then
`./build.sh` and `sluice plugin test {file}.wasm --config '{"above": 10}'`.
"""

from wit_world import exports
from wit_world.imports.types import PluginInfo


class Aggregator(exports.Aggregator):
    def info(self) -> PluginInfo:
        return PluginInfo(
            name="{name}",
            version="0.1.0",
            description="Mean of the values above a threshold.",
            state_version=1,
            mergeable=True,
            commutative=True,
            config_help='{"above": 0}',
        )
