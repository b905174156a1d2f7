"""Run and figure directories, the MINIRLHF_RUNS override, and the lessons' flags."""

import pytest

from minirlhf import paths


def test_runs_and_figures_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRLHF_RUNS", str(tmp_path / "r"))
    assert paths.runs_dir(False) == tmp_path / "r" and (tmp_path / "r").is_dir()
    assert paths.runs_dir(True) == tmp_path / "r" / "smoke"
    assert paths.figures_dir(True) == tmp_path / "r" / "smoke" / "figures"
    assert paths.figures_dir(True).is_dir()
    monkeypatch.delenv("MINIRLHF_RUNS")
    assert paths.runs_root() == paths.REPO_ROOT / "runs"


def test_lesson_args():
    args = paths.lesson_args(["--smoke", "--seed", "3", "-f", "kernel.json"])
    assert args.smoke and args.seed == 3
    args = paths.lesson_args([])
    assert not args.smoke and args.seed == 0


def test_minirlhf_smoke_env_var_makes_smoke_the_default(monkeypatch):
    monkeypatch.setenv("MINIRLHF_SMOKE", "1")
    assert paths.lesson_args([]).smoke
    monkeypatch.setenv("MINIRLHF_SMOKE", "0")
    assert not paths.lesson_args([]).smoke
    monkeypatch.delenv("MINIRLHF_SMOKE")
    assert not paths.lesson_args([]).smoke


@pytest.mark.parametrize("argv, message", [
    (["--smoek"], "unrecognized arguments: --smoek"),
    (["--seed", "-1"], "expected a non-negative integer, got -1"),
    (["--seed", "two"], "expected a non-negative integer, got 'two'"),
])
def test_lesson_args_reject_typos_and_bad_seeds(argv, message, capsys):
    with pytest.raises(SystemExit):
        paths.lesson_args(argv)
    assert message in capsys.readouterr().err


def test_lesson_args_take_a_lessons_extra_flags():
    args = paths.lesson_args(["--prefs", "p.jsonl"], extra=(("--prefs", {"default": None}),))
    assert args.prefs == "p.jsonl" and args.seed == 0 and not args.smoke


def test_artifact_paths_are_keyed_by_seed_and_tag(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRLHF_RUNS", str(tmp_path))
    assert paths.artifact_path(False, "base.ckpt") == tmp_path / "base.ckpt"          # the course
    assert paths.artifact_path(True, "base.ckpt", seed=1) == tmp_path / "smoke" / "seed1" / "base.ckpt"
    assert (tmp_path / "smoke" / "seed1").is_dir()
    assert paths.artifact_path(False, "reward.ckpt", tag="ab12") == tmp_path / "reward-ab12.ckpt"
    assert paths.artifact_path(False, "reward.ckpt", 2, "ab12") == tmp_path / "seed2" / "reward-ab12.ckpt"


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20) + b"tail")                 # more than one 1 MiB chunk
    assert paths.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert paths.file_digest(path, 8) == hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_recipe_survives_a_json_round_trip_and_compares_by_value():
    import dataclasses
    import json

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        lr: float = 1e-3
        sizes: tuple = (1, 2)

    made = paths.recipe("stage", Cfg(), seed=3, inputs={"sft": "abc"})
    meta = json.loads(json.dumps({"made_by": made}))              # as a checkpoint stores it
    assert paths.same_recipe(meta, paths.recipe("stage", Cfg(), seed=3, inputs={"sft": "abc"}))
    assert not paths.same_recipe(meta, paths.recipe("stage", Cfg(lr=2e-3), seed=3, inputs={"sft": "abc"}))
    assert not paths.same_recipe(meta, paths.recipe("stage", Cfg(), seed=4, inputs={"sft": "abc"}))
    assert not paths.same_recipe({}, made)


def test_build_lock_makes_a_second_process_wait(tmp_path):
    """A child process holds the lock for 1.5 s; this process's lock is granted only after it."""
    import subprocess
    import sys
    import time

    target = tmp_path / "a.ckpt"
    code = ("import sys, time; from minirlhf.paths import build_lock\n"
            "with build_lock(sys.argv[1]):\n"
            "    print('locked', flush=True); time.sleep(1.5)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    t0 = time.perf_counter()
    with paths.build_lock(target):
        waited = time.perf_counter() - t0
    assert child.wait(timeout=30) == 0
    assert waited > 0.5
