"""Run and figure directories, the MINIRLHF_RUNS override, and the lessons' flags."""

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
