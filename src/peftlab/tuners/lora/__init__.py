from .config import LoraConfig
from .layer import LoraLayer
from .model import LoraTuner

__all__ = ["LoraConfig", "LoraLayer", "LoraTuner"]
