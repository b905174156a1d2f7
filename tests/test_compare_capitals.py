"""Lesson 08's capitals comparison: the pieces that do not need the lessons' checkpoints."""

import dataclasses

import numpy as np
from test_dpo_train import TINY, pair_batch, tiny_params

from minirlhf import dpo_train
from minirlhf.compare_capitals import (
    COLUMNS,
    CapitalsCompareConfig,
    lesson06_dpo,
    markdown_table,
    trim_padding,
)
from minirlhf.model import forward


def written_out_sequence_logps(params, tokens, attention_mask, response_mask):
    """sum_t response_mask[t] log softmax(logits[t - 1])[tokens[t]] per row, in numpy."""
    logits = np.asarray(forward(params, tokens, attention_mask, TINY).logits, np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))            # [B, T, V]
    picked = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]  # [B, T-1]
    return (picked * response_mask[:, 1:]).sum(-1)                           # [B]


def test_trim_padding_cuts_to_the_last_used_column():
    arrays = pair_batch(np.random.default_rng(0), B=6, T=12)
    used = max(int(np.nonzero(arrays[k].any(0))[0].max()) + 1
               for k in ("chosen_attention_mask", "rejected_attention_mask"))
    assert used < 12   # the rows hold at most 7 tokens: there is padding to cut
    trimmed = trim_padding(arrays)
    for k, v in arrays.items():
        assert trimmed[k].shape == (6, used)
        np.testing.assert_array_equal(trimmed[k], v[:, :used])
        assert not v[:, used:].any()   # only padding was cut


def test_trimmed_pairs_have_the_log_probs_of_the_full_width():
    arrays = pair_batch(np.random.default_rng(1), B=5, T=14)
    params = tiny_params(0)
    chosen, rejected = dpo_train.pair_logps(params, trim_padding(arrays), TINY)
    for which, got in (("chosen", chosen), ("rejected", rejected)):
        want = written_out_sequence_logps(params, *(arrays[f"{which}_{n}"] for n in
                                                    ("tokens", "attention_mask", "response_mask")))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


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

