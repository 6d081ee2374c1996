from .config import BitFitConfig
from .layer import BitFitLayer
from .model import BitFitTuner

__all__ = ["BitFitConfig", "BitFitLayer", "BitFitTuner"]
