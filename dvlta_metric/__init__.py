"""dvlta-metric: DVLTA-VQA blind video quality assessment as a PyTorch metric.

The public names are exported here; modules whose names start with ``_`` are plumbing (as timm's
``_factory``, ``_hub``, ``_registry``) and may change without notice.

>>> import dvlta_metric
>>> model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
>>> score = model(video)  # (T, 3, H, W) in [0, 1] -> 0-d score in (0, 1), higher is better
"""

from ._allocator import release_free_memory, tune_allocator
from ._checkpoint import PretrainedMixin
from ._factory import create
from ._registry import (
    ModelInfo,
    WeightSource,
    get_model_config,
    list_models,
    model_info,
    register_model,
)
from .attributes import Attributes
from .batch import FileResult, score_files
from .calibration import Calibration, fit_calibration
from .config import ModelConfig
from .decoded import DecodedVideo
from .errors import CheckpointError, WeightsNotFoundError, WeightsUnavailableError
from .export import ViewNetwork, export_model, export_program
from .loss import plcc_loss, quality_loss, rank_loss
from .model import DVLTAVQA, Explanation
from .quality_map import QualityMap, write_overlays
from .raw_video import RawVideo
from .timeline import Timeline
from .torchcodec_io import check_torchcodec  # also registers read_video's decoder="torchcodec"
from .version import __version__
from .video_io import (
    DECODERS,
    VIDEO_EXTENSIONS,
    TransientError,
    VideoLimitError,
    find_videos,
    read_limits,
    read_options,
    read_video,
)

__all__ = [
    "DVLTAVQA",
    "Attributes",
    "Calibration",
    "QualityMap",
    "fit_calibration",
    "write_overlays",
    "DECODERS",
    "VIDEO_EXTENSIONS",
    "check_torchcodec",
    "CheckpointError",
    "DecodedVideo",
    "Explanation",
    "FileResult",
    "ModelInfo",
    "ModelConfig",
    "PretrainedMixin",
    "RawVideo",
    "Timeline",
    "TransientError",
    "VideoLimitError",
    "ViewNetwork",
    "WeightSource",
    "WeightsNotFoundError",
    "WeightsUnavailableError",
    "__version__",
    "create",
    "export_model",
    "export_program",
    "find_videos",
    "get_model_config",
    "list_models",
    "model_info",
    "plcc_loss",
    "quality_loss",
    "rank_loss",
    "read_video",
    "register_model",
    "read_limits",
    "read_options",
    "score_files",
    "release_free_memory",
    "tune_allocator",
]
