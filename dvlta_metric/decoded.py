"""``DecodedVideo``: the frames a reader decoded from a file, with their positions in the video."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DecodedVideo:
    """Some frames of a video file, decoded to RGB, and where they sit in the video.

    A reader decodes only the frames a model's views need (see :meth:`DVLTAVQA.needed_frames`), so
    ``frames`` usually holds fewer rows than the video has frames.

    Attributes:
        frames: ``(N, 3, H, W)`` uint8 RGB frames, upright (rotation metadata applied).
        indices: ``(N,)`` sorted, unique frame indices (0-based, in presentation order) of the rows.
        num_frames: Frames in the whole video.
        path: Where the frames came from.
        fps: Average frame rate, if known.
        metadata: What the reader learned about the file: codec, pixel format, rotation applied, colour
            transfer and whether it is HDR, whether the file looked truncated, and the like (see
            :func:`~dvlta_metric.video_io.read_video`).
        training_indices: The view indices (``{"fragments": (K, L), "frames": (T,), "consecutive": (T,)}``)
            drawn when a model in training mode or a loss model (``as_loss=True``) read the file
            (:meth:`DVLTAVQA.read`), which only decodes those frames; its training or loss views use them.
            ``None`` otherwise.
        drawn_for: ``"train"`` or ``"loss"``: which views ``training_indices`` were drawn for (``None`` when
            there are none).
    """

    frames: torch.Tensor
    indices: torch.Tensor
    num_frames: int
    path: str = ""
    fps: float | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    training_indices: dict[str, torch.Tensor] | None = None
    drawn_for: str | None = None

    def __post_init__(self) -> None:
        self.indices = torch.as_tensor(self.indices, dtype=torch.long).flatten()
        if self.frames.dim() != 4 or self.frames.shape[0] != self.indices.numel():
            raise ValueError(
                f"DecodedVideo: frames {tuple(self.frames.shape)} do not match {self.indices.numel()} indices"
            )
        if self.indices.numel() and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.num_frames):
            raise ValueError(f"DecodedVideo: indices outside [0, {self.num_frames})")
        if self.indices.numel() > 1 and not bool((self.indices[1:] > self.indices[:-1]).all()):
            raise ValueError("DecodedVideo: indices must be sorted and unique")

    def rows(self, wanted: torch.Tensor) -> torch.Tensor:
        """Row positions in :attr:`frames` of the video frame indices ``wanted``.

        Args:
            wanted: Long tensor of frame indices, any shape.

        Returns:
            Long tensor of the same shape.

        Raises:
            ValueError: If a wanted frame was not decoded.
        """
        flat = wanted.flatten()
        pos = torch.searchsorted(self.indices, flat).clamp_max(max(self.indices.numel() - 1, 0))
        if self.indices.numel() == 0 or not bool((self.indices[pos] == flat).all()):
            missing = sorted(set(flat.tolist()) - set(self.indices.tolist()))[:5]
            raise ValueError(f"{self.path or 'video'}: frames {missing} were needed but not decoded")
        return pos.reshape(wanted.shape)
