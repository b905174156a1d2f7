"""Every lesson runs top to bottom with --smoke (tiny configs, seconds each).

Lessons run in file order in the default smoke directory (runs/smoke), so a later
lesson can load the smoke checkpoints an earlier one wrote, exactly as `make lessons`
chains the real runs.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.py"))


def test_lessons_exist():
    assert LESSONS, f"no lessons found in {REPO / 'lessons'}"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_in_smoke_mode(lesson):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(lesson), "--smoke"], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{lesson.name} --smoke exited with {proc.returncode}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-2000:]}\n"
        f"--- stderr (tail) ---\n{proc.stderr[-4000:]}")
