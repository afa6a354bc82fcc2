"""The two views cut from one decoded video: fragments (ventral) and frames (dorsal)."""

from .fragments import (
    extract_fragments,
    fragment_view,
    sample_fragment_offsets,
    upsample_short_side,
)
from .frames import center_crop, frame_view, resize_short_side
from .normalize import normalize, to_unit_float
from .temporal import (
    RANDOM_IN_TRAINING,
    fragment_clip_indices,
    frames_to_decode,
    segment_centre_indices,
    view_indices,
)

__all__ = [
    "RANDOM_IN_TRAINING",
    "center_crop",
    "extract_fragments",
    "fragment_clip_indices",
    "fragment_view",
    "frame_view",
    "frames_to_decode",
    "normalize",
    "resize_short_side",
    "sample_fragment_offsets",
    "segment_centre_indices",
    "to_unit_float",
    "upsample_short_side",
    "view_indices",
]
