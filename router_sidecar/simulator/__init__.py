"""`laneway simulate-provider`: OpenAI- and Anthropic-compatible fake providers.

Tests, the demo and the benchmarks import `SimulatedProvider` (or `run_in_thread`) from here;
`docs/simulate-provider.md` describes the modes and the `/_control` API.
"""

from router_sidecar.simulator.server import SimulatedProvider, run_in_thread
from router_sidecar.simulator.settings import MODES, ControlError

__all__ = ["MODES", "ControlError", "SimulatedProvider", "run_in_thread"]
