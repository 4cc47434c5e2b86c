"""Figures: one place decides where a chapter's figure goes, and shows it in Jupyter.

* A full run of a chapter script writes ``figures/<name>.png`` (committed, shown in the
  README).
* A quick run (``--quick``, ``NODEFORM_QUICK=1``, or ``QUICK = True`` at the top of a
  chapter through :func:`is_quick`) writes ``figures/quick/<name>.png``, which git
  ignores, and says "quick run" in the figure's title.
* Run as a notebook (an IPython kernel), a chapter shows each figure inline and writes
  it to a temporary folder, so opening a chapter never overwrites the committed
  ``figures/``; set ``NODEFORM_WRITE_FIGURES=1`` to write there anyway.
* ``NODEFORM_FIGURES=DIR`` sends the figures to ``DIR`` (tests use a temporary one).

Only the chapter scripts call :func:`savefig`.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

#: Resolution of saved figures: sharp in the README, small in git.
DPI = 120
#: The repository's figures folder (the chapters live beside the package).
FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"
#: Values of an environment flag that mean "off".
_OFF = ("", "0", "false", "False", "no")
#: Quick mode chosen in code (``is_quick(True)``); None: from the environment and argv.
_quick_choice = None


def _flag(name):
    return os.environ.get(name, "0") not in _OFF


def is_quick(choice=None):
    """True in quick mode.

    Parameters
    ----------
    choice : bool, optional
        Choose quick mode from code (a notebook has no ``--quick``): the choice holds for
        the rest of the process, figures included. Default: ``NODEFORM_QUICK=1`` in the
        environment or ``--quick`` on the command line, unless a choice was made before.
    """
    global _quick_choice
    if choice is not None:
        _quick_choice = bool(choice)
    if _quick_choice is not None:
        return _quick_choice
    return _flag("NODEFORM_QUICK") or "--quick" in sys.argv


def in_notebook():
    """True when running inside a Jupyter (IPython) kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def figures_dir():
    """The folder figures go to now, created if needed (see the module docstring)."""
    if os.environ.get("NODEFORM_FIGURES"):
        base = Path(os.environ["NODEFORM_FIGURES"])
    elif in_notebook() and not _flag("NODEFORM_WRITE_FIGURES"):
        base = Path(tempfile.gettempdir()) / "nodeform-figures"
    else:
        base = FIGURES_DIR
    out = base / "quick" if is_quick() else base
    out.mkdir(parents=True, exist_ok=True)
    return out


def _mark_quick(fig):
    """Say in the title that a figure comes from a quick run (fewer iterations, points)."""
    if fig._suptitle is not None:
        fig._suptitle.set_text(fig._suptitle.get_text() + " (quick run)")
        return
    titled = [ax for ax in fig.axes if ax.get_title()]
    if titled:
        titled[0].set_title(titled[0].get_title() + " (quick run)")
    else:
        fig.suptitle("quick run")


def savefig(fig, name):
    """Save a Matplotlib figure as ``<figures_dir>/<name>.png``, show it in Jupyter, close it.

    Returns
    -------
    path : Path
    """
    import matplotlib.pyplot as plt
    if is_quick():
        _mark_quick(fig)
    path = figures_dir() / f"{name}.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    path.write_bytes(buf.getvalue())
    plt.close(fig)
    if in_notebook():
        from IPython.display import Image, display
        display(Image(data=buf.getvalue(), format="png"))
    print(f"wrote {path}")
    return path


def use_agg():
    """Switch Matplotlib to the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
