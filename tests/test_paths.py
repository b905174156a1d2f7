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
