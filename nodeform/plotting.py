"""Figures: one place decides where a chapter's figure goes.

Full runs write ``figures/<name>.png`` (committed, shown in the README). Quick runs
(``--quick`` or ``NODEFORM_QUICK=1``) write ``figures/quick/<name>.png``, which git
ignores, so the quick start never overwrites a full result. Only the chapter
scripts call :func:`savefig`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: Resolution of saved figures: sharp in the README, small in git.
DPI = 120
#: The repository's figures folder (the chapters live beside the package).
FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"


def is_quick():
    """True in quick mode: ``NODEFORM_QUICK=1`` in the environment or ``--quick`` on the command line."""
    return os.environ.get("NODEFORM_QUICK", "0") not in ("", "0", "false", "False") \
        or "--quick" in sys.argv


def figures_dir():
    """The folder figures go to now (``figures/`` or ``figures/quick/``), created if needed.

    ``NODEFORM_FIGURES`` overrides the base folder (tests use a temporary one).
    """
    base = Path(os.environ.get("NODEFORM_FIGURES", FIGURES_DIR))
    out = base / "quick" if is_quick() else base
    out.mkdir(parents=True, exist_ok=True)
    return out


def savefig(fig, name):
    """Save a Matplotlib figure as ``<figures_dir>/<name>.png`` and close it; returns the path."""
    import matplotlib.pyplot as plt
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def use_agg():
    """Switch Matplotlib to the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
