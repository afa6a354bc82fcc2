"""The views cut from one decoded video: fragments (ventral) and frames (dorsal; segment centres or consecutive)."""

from .fragments import (
    extract_fragments,
    fragment_view,
    sample_fragment_offsets,
    upsample_short_side,
)
from .frames import center_crop, frame_view, resize_short_side
from .normalize import normalize, to_unit_float
from .temporal import (
    FRAME_VIEW_NAMES,
    RANDOM_IN_TRAINING,
    VIEW_ORDER,
    consecutive_indices,
    fragment_clip_indices,
    frames_to_decode,
    segment_centre_indices,
    view_indices,
)

__all__ = [
    "FRAME_VIEW_NAMES",
    "RANDOM_IN_TRAINING",
    "VIEW_ORDER",
    "center_crop",
    "consecutive_indices",
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
