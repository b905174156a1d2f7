"""Lesson 08's capitals comparison: the pieces that do not need the lessons' checkpoints."""

import dataclasses

import numpy as np

from minirlhf.compare_capitals import (
    COLUMNS,
    CapitalsCompareConfig,
    lesson06_dpo,
    markdown_table,
)


def test_markdown_table_leaves_out_nan_entries():
    cols = {c: np.array([1.0, 2.0, 3.0]) for c in COLUMNS}
    rows = {"a": {**cols, "time_s": np.array([np.nan, 2.0, 4.0])},
            "b": {**cols, "time_s": np.array([np.nan, np.nan, np.nan])}}
    lines = markdown_table(rows).splitlines()
    std = np.sqrt(2.0 / 3.0)   # of 1, 2, 3
    assert lines[2] == "| a | " + " | ".join([f"2.000 ± {std:.3f}"] * 4 + ["3.000 ± 1.000"]) + " |"
    assert lines[3].endswith("| n/a |")


def test_lesson06_dpo_only_stands_in_for_its_own_run():
    cfg = CapitalsCompareConfig()
    assert lesson06_dpo(False, cfg, seed=1) is None   # lesson 06's seed-1 run has another pi_ref
    other = dataclasses.replace(cfg, dpo=dataclasses.replace(cfg.dpo, steps=cfg.dpo.steps + 1))
    assert lesson06_dpo(False, other, seed=0) is None

