"""Training, evaluation and publishing for DVLTA-VQA (the ``training`` package, separate from the library).

Install with ``pip install "dvlta-metric[train]"`` (adds scipy and matplotlib). The steps, each a module with
a command line (``python -m training.<module> --help``):

1. :mod:`training.convert`: upstream checkpoints (ViFi-CLIP or OpenAI CLIP, FAST-VQA-B) -> an initial model
   directory.
2. :mod:`training.datasets`: KoNViD-1k, LIVE-VQC, YouTube-UGC or your own CSV; ``check`` reports missing or
   unreadable videos before anything runs.
3. :mod:`training.features`: decode each video once and cache the frozen backbones' outputs.
4. :mod:`training.train`: 10 random 80/20 splits (:mod:`training.splits`) or cross-dataset; ``torchrun`` for
   several GPUs or nodes.
5. :mod:`training.evaluate`: SROCC, PLCC (after the 4-parameter logistic fit), KRCC, RMSE
   (:mod:`training.metrics`) and a scatter plot.
6. :mod:`training.push`: upload a trained directory to the Hugging Face Hub and print its registry entry.

See ``training/README.md`` for the walk-through that reproduces the paper's Table II.
"""

from __future__ import annotations

__all__: list[str] = []
