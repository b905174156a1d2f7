"""Where runtime artifacts and figures go, and the lessons' command line.

    runs_dir(smoke=False)     <repo>/runs           checkpoints, tokenizer.json, JSONL
    runs_dir(smoke=True)      <repo>/runs/smoke     the same for --smoke runs (tests)
    figures_dir(smoke=False)  <repo>/figures        the lessons' real figures
    figures_dir(smoke=True)   <runs>/smoke/figures  so smoke runs never overwrite them

The environment variable MINIRLHF_RUNS replaces <repo>/runs as the root.  Every
directory is created on demand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV_VAR = "MINIRLHF_RUNS"


def runs_root() -> Path:
    """$MINIRLHF_RUNS if set, else <repo>/runs (not created)."""
    return Path(os.environ.get(RUNS_ENV_VAR) or REPO_ROOT / "runs")


def runs_dir(smoke: bool) -> Path:
    """The directory for runtime artifacts: the runs root, or its `smoke/` subdirectory."""
    path = runs_root() / "smoke" if smoke else runs_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(smoke: bool) -> Path:
    """<repo>/figures, or <runs root>/smoke/figures in smoke mode."""
    path = runs_dir(True) / "figures" if smoke else REPO_ROOT / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_arg(text: str) -> int:
    """argparse type of --seed: a non-negative integer (numpy Generators reject negative seeds)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {seed}")
    return seed


def lesson_args(argv: list[str] | None = None, extra: tuple = ()) -> argparse.Namespace:
    """Parse a lesson's flags: --smoke (tiny config, seconds; used by the tests), --seed, and a
    lesson's own flags `extra`, as (flag, argparse keyword arguments) pairs.

    A misspelt flag is an error (a typo must not silently start the full run).  The one
    exception is a Jupyter kernel, which passes flags of its own: `-f <connection file>` is
    accepted always, and inside a kernel unknown flags are ignored, so the lessons also run
    as notebooks."""
    parser = argparse.ArgumentParser(description="Run a minirlhf lesson top to bottom.")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny configuration that finishes in seconds (used by tests)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of every random choice")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("-f", dest="jupyter_connection_file", help=argparse.SUPPRESS)
    if "ipykernel" in sys.modules:
        return parser.parse_known_args(argv)[0]
    return parser.parse_args(argv)
