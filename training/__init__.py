"""Training, evaluation and publishing for DVLTA-VQA, separate from the library.

The repository's ``training/`` folder, installed as ``dvlta_metric_train`` (as open_clip ships
``open_clip_train``) with ``pip install "dvlta-metric[train]"`` (adds scipy and matplotlib). The steps, each a
module with a command line (``python -m dvlta_metric_train.<module> --help``):

1. :mod:`dvlta_metric_train.convert`: upstream checkpoints (ViFi-CLIP or OpenAI CLIP, FAST-VQA-B) -> an initial model
   directory.
2. :mod:`dvlta_metric_train.datasets`: KoNViD-1k, LIVE-VQC, YouTube-UGC or your own CSV; ``check`` reports missing or
   unreadable videos before anything runs.
3. :mod:`dvlta_metric_train.features`: decode each video once and cache the frozen backbones' outputs.
4. :mod:`dvlta_metric_train.train`: 10 random 80/20 splits (:mod:`dvlta_metric_train.splits`) or
   cross-dataset; ``torchrun`` for several GPUs or nodes.
5. :mod:`dvlta_metric_train.evaluate`: SROCC, PLCC (after the 4-parameter logistic fit), KRCC, RMSE
   (:mod:`dvlta_metric_train.metrics`) and a scatter plot.
6. :mod:`dvlta_metric_train.push`: upload a trained directory to the Hugging Face Hub and print its registry entry.

Behind them: ``cache`` (the feature cache's format and reader), ``cached`` (the model's forward from cached
features), ``params``, ``jobs`` and ``scheduler`` (the trainer's settings, jobs and schedule), ``distributed``
(torchrun), ``splits``, ``metrics`` and ``files`` (atomic writes, read-ahead).

See ``training/README.md`` for the walk-through that reproduces the paper's Table II.
"""

from __future__ import annotations

__all__: list[str] = []
