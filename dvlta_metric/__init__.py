"""dvlta-metric: DVLTA-VQA blind video quality assessment as a PyTorch metric.

>>> import dvlta_metric
>>> model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
>>> score = model(video)  # (T, 3, H, W) in [0, 1] -> 0-d score in (0, 1), higher is better
"""

from .config import ModelConfig
from .factory import create
from .loss import plcc_loss, quality_loss, rank_loss
from .model import DVLTAVQA, Explanation
from .registry import get_model_config, list_models, register_model
from .version import __version__

__all__ = [
    "DVLTAVQA",
    "Explanation",
    "ModelConfig",
    "__version__",
    "create",
    "get_model_config",
    "list_models",
    "plcc_loss",
    "quality_loss",
    "rank_loss",
    "register_model",
]
