from .config import GatedPrefixConfig
from .gate_log import GateLogger, gate_values, plot_gate_trends, read_gate_log
from .model import GatedPrefixTuner

__all__ = ["GateLogger", "GatedPrefixConfig", "GatedPrefixTuner", "gate_values", "plot_gate_trends",
           "read_gate_log"]
