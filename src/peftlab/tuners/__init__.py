"""Built-in methods. Importing this package registers them (peftlab.registry)."""
from .base import AdapterLayer, ModulesToSaveWrapper, Tuner
from .bitfit import BitFitConfig, BitFitTuner
from .full import FullFinetuneConfig, FullFinetuneTuner
from .lora import LoraConfig, LoraTuner

__all__ = [
    "AdapterLayer", "ModulesToSaveWrapper", "Tuner",
    "BitFitConfig", "BitFitTuner", "FullFinetuneConfig", "FullFinetuneTuner", "LoraConfig", "LoraTuner",
]
