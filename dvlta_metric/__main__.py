"""``python -m dvlta_metric``: the same as the ``dvlta-metric`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
