"""Bad input, clashing runs and numerical edges: each case ends in a finite answer with the
right gradient, or in one clear error naming the file and line (or the stage and step)."""


import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import paths, ppo
from minirlhf.model import GPTConfig, init_params

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- PPO's losses at the edges
#
# The clipped surrogate written out per token (Schulman et al. 2017, eq. 7), in float64 NumPy:
#     term_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)),  loss = sum_valid term_t / n
#     d loss / d log pi_t = -A_t rho_t / n where the unclipped term is the max, else 0.


def surrogate_reference(logratio, adv, valid, eps):
    rho = np.exp(np.where(valid, logratio, 0.0))
    a = np.where(valid, adv, 0.0)
    term = np.maximum(-a * rho, -a * np.clip(rho, 1 - eps, 1 + eps))
    n = valid.sum()
    clipped = ((a > 0) & (rho > 1 + eps)) | ((a < 0) & (rho < 1 - eps)) | (a == 0)
    grad = np.where(valid & ~clipped, -a * rho / n, 0.0)
    return np.sum(np.where(valid, term, 0.0)) / n, grad


def _policy_loss_and_grad(new, old, adv, mask, eps):
    def f(lp):
        return ppo.policy_loss(lp[None], jnp.asarray(old, jnp.float32)[None],
                               jnp.asarray(adv, jnp.float32)[None],
                               jnp.asarray(mask, jnp.float32)[None], eps)[0]
    loss, grad = jax.value_and_grad(f)(jnp.asarray(new, jnp.float32))
    return float(loss), np.asarray(grad)


def test_policy_loss_huge_log_ratio_where_clipped_gives_finite_loss_and_zero_gradient():
    eps = 0.2
    old = np.full(6, -3.0)
    logratio = np.array([100.0, 95.0, 0.1, -0.4, 0.05, -100.0])   # exp(100) overflows float32
    adv = np.array([1.5, 0.0, -0.7, 0.8, 2.0, -1.0])                # clipped, A=0, ..., clipped
    loss, grad = _policy_loss_and_grad(old + logratio, old, adv, np.ones(6), eps)
    want_loss, want_grad = surrogate_reference(logratio, adv, np.ones(6, bool), eps)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
    assert grad[0] == 0.0 and grad[1] == 0.0 and grad[5] == 0.0


def test_policy_loss_ignores_nan_and_inf_at_masked_positions():
    eps = 0.2
    new = np.array([-1.0, np.nan, -2.0, np.inf, -0.5])
    old = np.array([-1.1, -1.0, np.nan, -np.inf, -0.4])
    adv = np.array([0.5, 1.0, 2.0, np.nan, -1.5])
    mask = np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    loss, grad = _policy_loss_and_grad(new, old, adv, mask, eps)
    valid = mask > 0
    want_loss, want_grad = surrogate_reference(np.where(valid, new - old, 0.0), adv, valid, eps)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
    assert np.all(grad[~valid] == 0.0)


def test_policy_loss_keeps_a_nan_at_a_valid_position_visible():
    loss, _ = _policy_loss_and_grad(np.array([np.nan, -1.0]), np.array([-1.0, -1.0]),
                                    np.array([1.0, 1.0]), np.ones(2), 0.2)
    assert np.isnan(loss)


def test_value_loss_ignores_nan_and_inf_at_masked_positions():
    eps_v = 0.2
    v_new = np.array([0.9, np.nan, 1.4, -np.inf, 0.0])      # entry 0: the clipped square wins
    v_old = np.array([0.0, np.inf, 1.0, 0.0, np.nan])
    ret = np.array([1.0, 0.0, np.nan, 2.0, 1.0])
    mask = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    ret_valid = np.where(mask > 0, np.nan_to_num(ret, nan=0.7), 0.0)
    ret = np.where(mask > 0, ret_valid, ret)                         # valid returns are finite
    for clip in (eps_v, None):
        loss, grad = jax.value_and_grad(lambda v, clip=clip: ppo.value_loss(
            v, jnp.asarray(v_old, jnp.float32), jnp.asarray(ret, jnp.float32),
            jnp.asarray(mask, jnp.float32), clip)[0])(jnp.asarray(v_new, jnp.float32))
        # written out on the valid entries only: 0.5 * mean(max((V - R)^2, (V_clip - R)^2))
        i = np.flatnonzero(mask)
        v, vo, r = v_new[i], v_old[i], ret[i]
        sq = (v - r) ** 2
        if clip is not None:
            sq = np.maximum(sq, (vo + np.clip(v - vo, -clip, clip) - r) ** 2)
        np.testing.assert_allclose(float(loss), 0.5 * sq.mean(), rtol=1e-5)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.all(grad[mask == 0] == 0.0)
        assert clip is None or grad[0] == 0.0
        # d/dV of 0.5 * mean((V - R)^2) = (V - R) / n where the unclipped square is the max
        unclipped = np.ones(len(i), bool) if clip is None else (
            (v - r) ** 2 >= (vo + np.clip(v - vo, -clip, clip) - r) ** 2)
        np.testing.assert_allclose(grad[i], np.where(unclipped, (v - r) / len(i), 0.0),
                                   rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- training stops at a non-finite loss


def test_check_finite_names_stage_and_step():
    from minirlhf.training import check_finite

    check_finite("sft", 3, 0.25)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(FloatingPointError, match=r"\[reward/full\] step 7: the loss is"):
            check_finite("reward/full", 7, bad)


def test_a_nan_checkpoint_stops_training_at_step_one():
    """NaN weights (a damaged pi_ref, say) give loss = nan at the first step: the loop stops
    there, naming the stage, instead of training on."""
    from minirlhf.pretrain import train_lm

    cfg = GPTConfig(vocab_size=16, max_len=8, n_layer=1, n_head=1, d_model=8)
    params = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan),
                                    init_params(jax.random.PRNGKey(0), cfg))
    rng = np.random.default_rng(0)
    arrays = {"tokens": rng.integers(3, 16, (4, 8)).astype(np.int32),
              "attention_mask": np.ones((4, 8), np.int32), "loss_mask": np.ones((4, 8), np.int32)}
    with pytest.raises(FloatingPointError, match=r"\[sft\] step 1: the loss is nan"):
        train_lm(params, arrays, cfg, steps=5, batch_size=2, lr=1e-3, weight_decay=0.0, seed=0,
                 name="sft", quiet=True)


# ----------------------------------------------------------------------------- tokenizer and lengths


def test_damaged_tokenizer_file_names_its_path(tmp_path):
    from minirlhf.tokenizer import load_or_train_tokenizer

    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ')               # cut short
    with pytest.raises(ValueError, match=rf"tokenizer {tmp_path}/tokenizer\.json: not a readable"):
        load_or_train_tokenizer(path, ["never used"])


def test_unsupported_character_error_shows_an_excerpt(tok):
    from minirlhf.tokenizer import encode_text

    text = "a" * 100_000 + "\u00e9" + "b" * 5_000
    with pytest.raises(ValueError, match=r"prefs\.jsonl line 3 field 'chosen': characters \['\u00e9'\]"
                                         r".*the first at character 100000 of 105001") as info:
        encode_text(tok, text, what="prefs.jsonl line 3 field 'chosen'")
    assert len(str(info.value)) < 300


def test_an_over_long_pair_names_its_line(tok):
    from minirlhf.reward_data import check_fits

    ok = {"prompt": "What's the capital of France?", "chosen": " Paris.", "rejected": " Berlin."}
    long = {**ok, "rejected": " Berlin" + " and Berlin" * 40 + "."}
    n_long = 2 + len(tok.encode(long["prompt"], add_special_tokens=False).ids) + len(
        tok.encode(long["rejected"], add_special_tokens=False).ids)   # <bos> prompt response <eos>
    assert n_long > 64
    with pytest.raises(ValueError, match=rf"prefs\.jsonl line 2: the pair needs {n_long} tokens > "
                                         r"GPTConfig\.max_len=64 \(1 of 3 pairs"):
        check_fits(tok, [ok, long, ok], 64, source="prefs.jsonl")
    n_ok = 2 + len(tok.encode(ok["prompt"], add_special_tokens=False).ids) + max(
        len(tok.encode(ok[w], add_special_tokens=False).ids) for w in ("chosen", "rejected"))
    assert check_fits(tok, [ok, ok], 64) == n_ok


def test_a_lesson_given_a_bad_preference_file_exits_non_zero_naming_the_line(tmp_path):
    bad = tmp_path / "my.jsonl"
    rec = {"prompt": "Hi?", "chosen": " Hello.", "rejected": " Bye."}
    bad.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "rejected": " Hello."}) + "\n")
    run = subprocess.run([sys.executable, str(REPO / "lessons" / "04_reward_model.py"), "--smoke",
                          "--prefs", str(bad)], capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "MINIRLHF_RUNS": str(tmp_path / "runs")})
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert "my.jsonl line 2: field 'rejected': the same response as 'chosen'" in last
    assert not (tmp_path / "runs" / "smoke" / "sft.ckpt").exists()   # failed before any work


# ----------------------------------------------------------------------------- artifacts keyed by what made them


def _fake_stages(monkeypatch, log):
    """Replace pretraining and SFT by instant stand-ins that record each call."""
    from minirlhf import pretrain, sft

    def fake_pretrain(tok, cfg, quiet=False):
        log.append(("pretrain", cfg.seed))
        return init_params(jax.random.PRNGKey(cfg.seed), cfg.model), np.array([1.0])

    def fake_sft(params, model_cfg, tok, cfg, world=None, quiet=False):
        log.append(("sft", cfg.seed))
        return params, np.array([1.0])

    monkeypatch.setattr(pretrain, "pretrain", fake_pretrain)
    monkeypatch.setattr(sft, "sft", fake_sft)


def test_another_seed_never_overwrites_the_course_artifacts(tmp_path, monkeypatch):
    from minirlhf.pretrain import base_model_path, pretrain_config, save_base_model
    from minirlhf.sft import ensure_sft_model, sft_model_path

    monkeypatch.setenv("MINIRLHF_RUNS", str(tmp_path))
    log = []
    _fake_stages(monkeypatch, log)
    ensure_sft_model(True)                                        # the course: seed 0
    assert log == [("pretrain", 0), ("sft", 0)]
    course = {p: p.read_bytes() for p in (base_model_path(True), sft_model_path(True))}
    # lesson 02 --seed 1 saves its base model; lesson 03 --seed 1 builds on it
    cfg1 = pretrain_config(True, seed=1)
    save_base_model(True, cfg1, init_params(jax.random.PRNGKey(1), cfg1.model), np.array([1.0]))
    ensure_sft_model(True, seed=1)
    assert log == [("pretrain", 0), ("sft", 0), ("sft", 1)]      # seed 1's base reused, not rebuilt
    assert base_model_path(True, 1) == tmp_path / "smoke" / "seed1" / "base.ckpt"
    assert {p: p.read_bytes() for p in course} == course          # seed 0's files untouched
    ensure_sft_model(True)                                        # and still what seed 0 loads
    assert len(log) == 3


def test_an_artifact_made_by_another_recipe_is_rebuilt(tmp_path, monkeypatch):
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint
    from minirlhf.pretrain import base_model_path, ensure_base_model, pretrain_config
    from minirlhf.sft import ensure_sft_model

    monkeypatch.setenv("MINIRLHF_RUNS", str(tmp_path))
    log = []
    _fake_stages(monkeypatch, log)
    ensure_sft_model(True)
    params, cfg, meta = load_checkpoint(base_model_path(True))
    other = {**meta, "made_by": {**meta["made_by"], "config": {**meta["made_by"]["config"], "lr": 1.0}}}
    save_checkpoint(base_model_path(True), params, cfg, other)   # e.g. made with another lr
    ensure_base_model(True)
    assert log == [("pretrain", 0), ("sft", 0), ("pretrain", 0)]
    # the base model changed bytes (its meta), so pi_ref built on the old one is rebuilt too
    save_checkpoint(base_model_path(True), params, cfg, {**meta, "final_loss": 2.0})
    ensure_sft_model(True)
    assert log[-2:] == [("pretrain", 0), ("sft", 0)]
    assert pretrain_config(True).seed == 0


def test_a_users_preference_file_gets_its_own_reward_model_path(tmp_path, monkeypatch):
    from minirlhf.data import write_preferences
    from minirlhf.reward import reward_model_path
    from minirlhf.reward_data import preference_paths

    monkeypatch.setenv("MINIRLHF_RUNS", str(tmp_path))
    mine = write_preferences(tmp_path / "my.jsonl", [{"prompt": "Hi?", "chosen": " a", "rejected": " b"}])
    course = reward_model_path(True, 0)
    assert course == tmp_path / "smoke" / "reward.ckpt"
    assert reward_model_path(True, 0, preference_paths(True)["train"]) == course
    assert reward_model_path(True, 0, mine) == tmp_path / "smoke" / f"reward-{paths.file_digest(mine, 8)}.ckpt"
    assert reward_model_path(True, 2, mine).parent == tmp_path / "smoke" / "seed2"


# ----------------------------------------------------------------------------- two runs at once

FAKE_RUN = """
import sys, time
from pathlib import Path
import jax, numpy as np
from minirlhf import pretrain, sft
from minirlhf.model import init_params
log = Path(sys.argv[1])
def fake_pretrain(tok, cfg, quiet=False):
    with open(log, "a") as f: f.write("pretrain\\n")
    time.sleep(1.0)
    return init_params(jax.random.PRNGKey(cfg.seed), cfg.model), np.array([1.0])
def fake_sft(params, model_cfg, tok, cfg, world=None, quiet=False):
    with open(log, "a") as f: f.write("sft\\n")
    time.sleep(1.0)
    return params, np.array([1.0])
pretrain.pretrain, sft.sft = fake_pretrain, fake_sft
sft.ensure_sft_model(True)
"""


def test_two_processes_needing_the_same_missing_artifacts_both_finish_and_build_once(tmp_path):
    """Two processes over one empty runs/ both ask for pi_ref (which needs the base model): the
    build lock makes the second wait and load what the first built; both exit 0."""
    log = tmp_path / "builds.log"
    env = {**os.environ, "MINIRLHF_RUNS": str(tmp_path / "runs")}
    procs = [subprocess.Popen([sys.executable, "-c", FAKE_RUN, str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert sorted(log.read_text().split()) == ["pretrain", "sft"]
    smoke = tmp_path / "runs" / "smoke"
    assert not [p.name for p in smoke.iterdir() if p.suffix == ".tmp"]
