"""Where runtime artifacts and figures go, how they are written, and the lessons' command line.

    runs_dir(smoke=False)     <repo>/runs           checkpoints, tokenizer.json, JSONL
    runs_dir(smoke=True)      <repo>/runs/smoke     the same for --smoke runs (tests)
    figures_dir(smoke=False)  <repo>/figures        the lessons' real figures
    figures_dir(smoke=True)   <runs>/smoke/figures  so smoke runs never overwrite them

The environment variable MINIRLHF_RUNS replaces <repo>/runs as the root.  Every
directory is created on demand.

Artifacts are keyed by what made them, so that no run overwrites another's:

    artifact_path(smoke, "base.ckpt")                 runs[/smoke]/base.ckpt        (the course: seed 0)
    artifact_path(smoke, "base.ckpt", seed=1)         runs[/smoke]/seed1/base.ckpt
    artifact_path(smoke, "reward.ckpt", tag="3fa2c1") runs[/smoke]/reward-3fa2c1.ckpt (e.g. another
                                                      preference file; `tag` = digest of its input)

Each checkpoint also records its recipe, `meta["made_by"]`: the stage, its config and the
digests (`file_digest`) of the files it was built from.  A stage's `ensure_*` loads an artifact
only when the recorded recipe equals the one it would use (`same_recipe`), and rebuilds it
otherwise; `build_lock` makes a second process that wants the same missing artifact wait for the
first and then load it.  Every write is atomic (`atomic_write`: a unique temp file in the same
directory, fsync, rename, fsync of the directory): a killed run leaves the old file or the new
one, and two processes writing one path both succeed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV_VAR = "MINIRLHF_RUNS"
SMOKE_ENV_VAR = "MINIRLHF_SMOKE"     # =1: the lessons default to --smoke (notebooks have no flags)


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


def artifact_path(smoke: bool, filename: str, seed: int = 0, tag: str | None = None) -> Path:
    """runs[/smoke]/[seed{seed}/]filename, with "-{tag}" before the suffix when tagged (see the
    module docstring): seed 0 without a tag is the course's own path."""
    directory = runs_dir(smoke) / f"seed{seed}" if seed else runs_dir(smoke)
    name = Path(filename)
    if tag:
        name = name.with_name(f"{name.stem}-{tag}{name.suffix}")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def file_digest(path, n_hex: int = 12) -> str:
    """The first n_hex hex digits of the SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n_hex]


def recipe(stage: str, config=None, **inputs) -> dict:
    """What makes an artifact, as plain JSON: {"stage", "config" (a dataclass as a dict), and the
    keyword `inputs` (seeds, file digests)}.  Tuples become lists, as they do in a checkpoint's
    JSON meta, so a recipe read back compares equal to the one computed."""
    doc = {"stage": stage, "config": dataclasses.asdict(config) if config is not None else None,
           **inputs}
    return json.loads(json.dumps(doc, sort_keys=True))


def same_recipe(meta: dict, want: dict) -> bool:
    """Was the artifact whose meta is `meta` made by the recipe `want`?"""
    return isinstance(meta, dict) and meta.get("made_by") == want


@contextlib.contextmanager
def build_lock(path):
    """Hold an exclusive lock on `<dir>/.<name>.lock` while the artifact `path` is checked and, if
    needed, built: a second process asking for the same artifact waits, then finds it built."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def atomic_write(path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one: a unique temp
    file (mkstemp, so concurrent writers never share it) in the same directory, fsync, os.replace,
    then fsync of the directory (so the rename itself survives a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
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
    as notebooks.  A notebook has no command line: the environment variable MINIRLHF_SMOKE=1
    (e.g. `MINIRLHF_SMOKE=1 jupyter lab`) makes --smoke the default."""
    parser = argparse.ArgumentParser(description="Run a minirlhf lesson top to bottom.")
    parser.add_argument("--smoke", action="store_true", default=os.environ.get(SMOKE_ENV_VAR) == "1",
                        help="tiny configuration that finishes in seconds (used by tests); "
                             f"the default when {SMOKE_ENV_VAR}=1")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of every random choice")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("-f", dest="jupyter_connection_file", help=argparse.SUPPRESS)
    if "ipykernel" in sys.modules:
        return parser.parse_known_args(argv)[0]
    return parser.parse_args(argv)
