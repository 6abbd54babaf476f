"""The component's entry point: `componentize-py ... componentize app`.

componentize-py looks for the interface's free functions in a class named
after the interface (`Aggregator`) in this module, and for its resource
(`Aggregation`, which keeps the states of all windows) in a module named
after the interface: `aggregator.py`, beside this file.
"""

from wit_world import exports
from wit_world.imports.types import PluginInfo

from aggregator import STATE_VERSION


class Aggregator(exports.Aggregator):
    """`sluice:plugin/aggregator@0.2.0`: what the plugin says about itself."""

    def info(self) -> PluginInfo:
        return PluginInfo(
            name="ewma",
            version="0.2.0",
            description=(
                "Exponentially weighted moving average and variance of the values "
                "in arrival order: each new value has weight 1 and older ones decay "
                "by (1 - alpha) per value."
            ),
            state_version=STATE_VERSION,
            mergeable=True,
            # Merging appends the other group's values after this one's.
            commutative=False,
            config_help='{"alpha": 0.1} (0 < alpha <= 1, default 0.1): weight of the newest value',
        )
