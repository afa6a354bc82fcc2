"""Text-queried attributes: how well "a blurry video" describes a video against "a sharp video".

CLIP-IQA (Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images", AAAI 2023, Sec. 3)
scores an image attribute with an antonym prompt pair: the softmax of the image's scaled cosine similarities
to the two prompts. DVLTA-VQA's score is already that, for the pair "a photo of a high quality video." /
"a photo of a low quality video." (eqs. 12-13). Attributes reuse the same joint text-video space: the same
video feature (the fused feature ``F_fused`` of eq. 11; the zero-shot model's CLIP feature), the same text
adapter on the prompt embeddings, the same scale ``s``, other prompt pairs. So an attribute pair equal to the
model's quality pair gives exactly the model's score.

Each attribute is asked as ``"a photo of a {word} video."`` against ``"a photo of a {antonym} video."`` (the
template of the quality prompts; ViFi-CLIP's "a photo of a {}."), or as an explicit pair of prompts. The
default set (:data:`DEFAULT_ATTRIBUTES`) names the usual distortions of user-generated and compressed video
*(ours)*; its antonyms are ours too. Scores are probabilities that the attribute, rather than its antonym,
describes the video: a higher "blurry" is blurrier.

New prompts are embedded by a text tower (:class:`TextEncoder`): the zero-shot model keeps the OpenAI CLIP text
tower it loads anyway; other models need one attached (``model.set_text_encoder``). Embeddings are cached by
prompt, so the text tower runs once per prompt and scoring attributes costs a few dot products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ._clip_towers import build_clip, encode_prompts
from .config import ModelConfig

TEMPLATE = "a photo of a {} video."
"""How a word becomes a prompt (the template of the model's quality prompts; ViFi-CLIP's "a photo of a {}.")."""

ANTONYMS: dict[str, str] = {
    "blurry": "sharp",
    "noisy": "clean",
    "blocky": "smooth",
    "dark": "bright",
    "overexposed": "well-exposed",
    "shaky": "steady",
    "dull": "colorful",
    "low contrast": "high contrast",
    "low quality": "high quality",
}
"""The antonym of each word of :data:`DEFAULT_ATTRIBUTES` (and each antonym's antonym) *(ours)*."""
ANTONYMS |= {v: k for k, v in list(ANTONYMS.items())}

DEFAULT_ATTRIBUTES: tuple[str, ...] = ("blurry", "noisy", "blocky", "dark", "overexposed", "shaky", "dull")
"""The attributes :meth:`~dvlta_metric.model.DVLTAVQA.attributes` scores when given none: common distortions of
user-generated and compressed video *(ours)*."""

Attribute = str | tuple[str, str]
"""A word with a known antonym (a key of :data:`ANTONYMS`), or a ``(positive prompt, negative prompt)`` pair."""


@dataclass(frozen=True)
class AttributeQuery:
    """One attribute as asked: a name and its two prompts.

    Attributes:
        name: The word, or the positive prompt of an explicit pair.
        positive: The prompt whose probability is reported.
        negative: Its antonym prompt.
    """

    name: str
    positive: str
    negative: str


def attribute_queries(attributes: Sequence[Attribute] | None) -> list[AttributeQuery]:
    """Turn words and pairs into prompt pairs (:data:`DEFAULT_ATTRIBUTES` when ``None``).

    Args:
        attributes: Words with a known antonym, or ``(positive, negative)`` prompt pairs, or ``None``.

    Returns:
        One :class:`AttributeQuery` per attribute, in order.

    Raises:
        TypeError: If ``attributes`` is not a list or tuple of strings and pairs.
        ValueError: If it is empty, a word has no known antonym, a prompt is empty, a pair's two prompts are the
            same text (up to case and spaces, which the text tower ignores) or a name repeats.
    """
    if attributes is None:
        attributes = DEFAULT_ATTRIBUTES
    if isinstance(attributes, str) or not isinstance(attributes, (list, tuple)):
        raise TypeError(
            f"attributes must be a list of words or (positive, negative) prompt pairs, got {type(attributes).__name__}"
        )
    if not attributes:
        raise ValueError(
            "attributes is empty: give at least one word (e.g. ['blurry', 'noisy']) or (positive, negative) prompt "
            f"pair, or None for the default set {list(DEFAULT_ATTRIBUTES)}"
        )
    queries: list[AttributeQuery] = []
    for item in attributes:
        if isinstance(item, str):
            word = item.strip()
            if word not in ANTONYMS:
                raise ValueError(
                    f"no known antonym for attribute {item!r}; known words: {sorted(ANTONYMS)}. Ask for it as a "
                    f"pair of prompts instead, e.g. ('a photo of a {word} video.', 'a photo of a ... video.')"
                )
            queries.append(AttributeQuery(word, TEMPLATE.format(word), TEMPLATE.format(ANTONYMS[word])))
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(p, str) for p in item):
            if not (item[0].strip() and item[1].strip()):
                raise ValueError(f"attribute prompts must not be empty, got {item!r}")
            if _same_text(*item):
                raise ValueError(
                    f"attribute pair {item!r} has the same prompt twice, which always scores 0.5: give a prompt and "
                    "its antonym, e.g. ('a photo of a rainy video.', 'a photo of a sunny video.')"
                )
            queries.append(AttributeQuery(item[0], item[0], item[1]))
        else:
            raise TypeError(f"an attribute is a word or a (positive, negative) pair of strings, got {item!r}")
    names = [q.name for q in queries]
    if len(set(names)) != len(names):
        raise ValueError(f"attribute names repeat: {names}")
    return queries


def _same_text(a: str, b: str) -> bool:
    """Whether two prompts tokenize alike: equal up to case and runs of white space (CLIP's tokenizer drops both)."""
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()


def pair_probability(
    features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, scale: float
) -> torch.Tensor:
    """CLIP-IQA's antonym score: ``softmax(s * [cos(F, T+), cos(F, T-)])[0]`` per video and pair.

    Args:
        features: ``(B, D)`` video features in the joint space.
        positive: ``(A, D)`` (adapted) embeddings of the positive prompts.
        negative: ``(A, D)`` embeddings of their antonyms.
        scale: The logit scale ``s`` (eq. 12).

    Returns:
        ``(B, A)`` probabilities of the positive prompts.
    """
    f = F.normalize(features, dim=-1)
    pos = scale * f @ F.normalize(positive, dim=-1).t()
    neg = scale * f @ F.normalize(negative, dim=-1).t()
    return torch.stack([pos, neg], dim=-1).softmax(dim=-1)[..., 0]


@dataclass
class Attributes:
    """Attribute scores of one or more videos.

    Attributes:
        names: The attributes, in order.
        scores: ``(A,)`` for one video or ``(B, A)``: the probability that each attribute, rather than its
            antonym, describes the video.
        queries: The prompt pairs asked.
    """

    names: tuple[str, ...]
    scores: torch.Tensor
    queries: tuple[AttributeQuery, ...]

    def as_dict(self) -> dict[str, float] | list[dict[str, float]]:
        """``{name: score}`` for one video, a list of them for a batch."""
        if self.scores.dim() == 1:
            return dict(zip(self.names, self.scores.tolist(), strict=True))
        return [dict(zip(self.names, row, strict=True)) for row in self.scores.tolist()]


class TextEncoder(nn.Module):
    """A CLIP text tower that embeds prompts ``E(prompt)`` (unnormalised, as CLIP's ``encode_text``), in float32.

    The image tower of the CLIP it wraps is dropped. Build one with :meth:`from_config` (random weights; for
    tests) or take the one the zero-shot model loads with its weights.

    Args:
        clip: An open_clip ``CLIP`` with its text tower.
        context_length: Token context length of the tower.
    """

    def __init__(self, clip: open_clip.CLIP, context_length: int) -> None:
        super().__init__()
        clip.visual = nn.Identity()  # not needed for text; frees the image tower's weights
        self.clip = clip.eval().requires_grad_(False)
        self.context_length = context_length

    @classmethod
    def from_config(cls, config: ModelConfig) -> TextEncoder:
        """A text tower of the model's text configuration with random weights (for tests and examples)."""
        return cls(build_clip(config.clip_vision, config.clip_text, config.embed_dim), config.clip_text.context_length)

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embed prompts: ``P`` strings -> ``(P, D)`` float32 on the CPU.

        Raises:
            ValueError: If a prompt has more tokens than the tower's context (it would be cut short silently).
        """
        return encode_prompts(self.clip, list(prompts), self.context_length).cpu()
