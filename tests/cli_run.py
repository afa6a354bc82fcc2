"""Running ``dvlta-metric`` in the test process, for the command-line tests."""

from __future__ import annotations

import pytest
import torch

from dvlta_metric.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``dvlta-metric *argv`` with torch's global seed at 0; returns the exit status, stdout and stderr."""
    torch.manual_seed(0)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
