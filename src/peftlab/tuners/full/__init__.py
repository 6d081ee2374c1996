from .config import FullFinetuneConfig
from .model import FullFinetuneTuner

__all__ = ["FullFinetuneConfig", "FullFinetuneTuner"]
