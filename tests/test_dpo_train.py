"""Stage 06 (DPO on the transformer): each behaviour checked against the math written out independently.

Tiny GPT configs built here (never the lessons' checkpoints), so each test takes seconds.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import written_out_lm_loss
from jax.flatten_util import ravel_pytree

from minirlhf.data import write_preferences
from minirlhf.dpo_train import (
    DPOConfig,
    concatenated_logps,
    dpo_batch_loss,
    encode_pairs,
    evaluate_pairs,
    implicit_rewards,
    load_pair_arrays,
    make_dpo_step,
    sequence_logratios,
    train_dpo,
    with_reference_logps,
)
from minirlhf.model import GPTConfig, forward, init_params
from minirlhf.sampling import Generation
from minirlhf.tokenizer import EOS_ID, PAD_ID, encode_text
from minirlhf.training import init_train_state

TINY = GPTConfig(vocab_size=32, max_len=16, n_layer=2, n_head=2, d_model=16)
TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
               "logps/chosen", "logps/rejected")


def tiny_params(seed, cfg=TINY):
    return init_params(jax.random.PRNGKey(seed), cfg)


def random_rows(rng, B, T, vocab):
    """Right-padded rows: <bos>=1, a prompt of 1-3 tokens, a response of 1-4 tokens (ids >= 3).
    -> tokens, attention_mask, response_mask [B, T] and the python (prompt, response) id lists."""
    tokens, attn, resp = (np.zeros((B, T), np.int32) for _ in range(3))
    rows = []
    for b in range(B):
        prompt = [1] + rng.integers(3, vocab, rng.integers(1, 4)).tolist()
        response = rng.integers(3, vocab, rng.integers(1, 5)).tolist()
        n, P = len(prompt) + len(response), len(prompt)
        tokens[b, :n], attn[b, :n], resp[b, P:n] = prompt + response, 1, 1
        rows.append((prompt, response))
    return tokens, attn, resp, rows


def pair_batch(rng, B=4, T=10, vocab=TINY.vocab_size):
    c, r = random_rows(rng, B, T, vocab), random_rows(rng, B, T, vocab)
    return {"chosen_tokens": c[0], "chosen_attention_mask": c[1], "chosen_response_mask": c[2],
            "rejected_tokens": r[0], "rejected_attention_mask": r[1], "rejected_response_mask": r[2]}


# ----------------------------------------------------------------------------- gradient

def test_dpo_gradient_equals_the_papers_written_out_gradient():
    """Rafailov et al. 2023 sec. 4:  grad L_DPO = -beta E[ sigma(r_l - r_w) (grad log pi(y_w) - grad log pi(y_l)) ]
    with r = beta log pi/pi_ref, assembled in float64 from per-sequence gradients (jax.grad of each
    sequence's log-prob alone, one row at a time) and compared with jax.grad of the batch loss."""
    rng, beta = np.random.default_rng(0), 0.5
    params, ref_params, batch = tiny_params(0), tiny_params(1), pair_batch(rng)
    batch = with_reference_logps(batch, ref_params, TINY)
    dcfg = DPOConfig(beta=beta)
    autodiff, _ = ravel_pytree(jax.jit(jax.grad(lambda p: dpo_batch_loss(p, batch, TINY, dcfg)[0]))(
        params))                                  # one compiled program, not op-by-op dispatch

    tokens_only = {k: v for k, v in batch.items() if not k.startswith("reference")}

    @partial(jax.jit, static_argnames="which")
    def row_value_and_grad(p, row, which):   # ONE sequence's log pi(y|x), row: [1, T] arrays
        return jax.value_and_grad(lambda q: concatenated_logps(q, row, TINY)[which][0])(p)

    def row_logp_and_grad(p, which, b):
        value, grad = row_value_and_grad(p, {k: v[b:b + 1] for k, v in tokens_only.items()}, which)
        return float(value), np.asarray(ravel_pytree(grad)[0], np.float64)

    expected, B = np.zeros(autodiff.shape, np.float64), len(batch["chosen_tokens"])
    for b in range(B):
        logp_w, grad_w = row_logp_and_grad(params, 0, b)
        logp_l, grad_l = row_logp_and_grad(params, 1, b)
        r_w = beta * (logp_w - float(batch["reference_chosen_logps"][b]))
        r_l = beta * (logp_l - float(batch["reference_rejected_logps"][b]))
        weight = 1.0 / (1.0 + np.exp(-(r_l - r_w)))                  # sigma(r_hat_l - r_hat_w)
        expected += -beta * weight * (grad_w - grad_l) / B
    assert np.abs(expected).max() > 1e-3                             # a real, nonzero gradient
    np.testing.assert_allclose(np.asarray(autodiff, np.float64), expected,
                               rtol=1e-4, atol=1e-6 * np.abs(expected).max())


# ----------------------------------------------------------------------------- masks

def test_sequence_logps_sum_only_response_tokens_and_ignore_padding():
    """Brute force: log pi(y|x) = Python sum of log softmax(logits[t-1])[x_t] over the response
    positions of each row run ALONE (no pads); appending pads or changing pad ids changes nothing."""
    rng, params = np.random.default_rng(1), tiny_params(2)
    batch = pair_batch(rng, B=3, T=9)
    chosen, rejected = (np.asarray(x) for x in concatenated_logps(params, batch, TINY))
    for which, got in (("chosen", chosen), ("rejected", rejected)):
        for b in range(3):
            n = int(batch[f"{which}_attention_mask"][b].sum())
            row = jnp.asarray(batch[f"{which}_tokens"][b:b + 1, :n])
            logits = np.asarray(forward(params, row, jnp.ones_like(row), TINY).logits[0], np.float64)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            positions = np.flatnonzero(batch[f"{which}_response_mask"][b])
            expected = sum(logp[t - 1, int(row[0, t])] for t in positions)
            np.testing.assert_allclose(got[b], expected, rtol=1e-5)
    wider = {k: np.pad(v, ((0, 0), (0, 5))) for k, v in batch.items()}          # 5 more pad columns
    for k in ("chosen_tokens", "rejected_tokens"):                              # garbage in pad slots
        wider[k] = np.where(wider[k.replace("tokens", "attention_mask")] == 1, wider[k],
                            rng.integers(3, TINY.vocab_size, wider[k].shape))
    np.testing.assert_allclose(np.stack(concatenated_logps(params, wider, TINY)), np.stack([chosen, rejected]),
                               rtol=1e-6, atol=1e-6)


def test_encode_pairs_different_lengths_and_unfinished_response_without_eos(tok):
    records = [{"prompt": "What's the capital of France?", "chosen": " The capital of France is Paris.",
                "rejected": " The capital of France is Berlin. The weather in Rome is mild today, they say.",
                "chosen_ended": True, "rejected_ended": False},
               {"prompt": "What's the capital of Peru?", "chosen": " Lima.", "rejected": " The capital of Peru is"}]
    arrays = encode_pairs(tok, records, max_len=40)
    for b, rec in enumerate(records):
        for which in ("chosen", "rejected"):
            ended = rec.get(f"{which}_ended", True)
            ids = encode_text(tok, rec[which])
            tokens, attn = arrays[f"{which}_tokens"][b], arrays[f"{which}_attention_mask"][b]
            resp = arrays[f"{which}_response_mask"][b]
            assert resp.sum() == len(ids) + ended                     # eos counted only if it ended
            assert tokens[resp == 1].tolist() == ids + [EOS_ID] * ended
            assert (EOS_ID in tokens.tolist()) == ended
            assert np.all(tokens[attn == 0] == PAD_ID) and np.all(resp <= attn)
    # chosen and rejected differ in length (row 0: 8 vs 20 response tokens), same width
    assert arrays["chosen_response_mask"][0].sum() < arrays["rejected_response_mask"][0].sum()
    cfg = GPTConfig(vocab_size=512, max_len=40, n_layer=1, n_head=2, d_model=16)
    params = init_params(jax.random.PRNGKey(0), cfg)
    both = np.stack(concatenated_logps(params, arrays, cfg))
    for b in range(2):                                                # each row alone, trimmed
        row = {k: v[b:b + 1, :int(max(arrays["chosen_attention_mask"][b].sum(),
                                      arrays["rejected_attention_mask"][b].sum()))]
               for k, v in arrays.items()}
        np.testing.assert_allclose(np.stack(concatenated_logps(params, row, cfg))[:, 0], both[:, b], rtol=1e-5)



def test_load_pair_arrays_is_exactly_as_wide_as_its_longest_pair(tok, tmp_path):
    records = [{"prompt": "What's the capital of France?", "chosen": " The capital of France is Paris.",
                "rejected": " The capital of France is Berlin. The weather in Rome is mild today."},
               {"prompt": "What's the capital of Peru?", "chosen": " Lima.", "rejected": " Quito."}]
    path = write_preferences(tmp_path / "prefs.jsonl", records)
    cfg = GPTConfig(vocab_size=512, max_len=64, n_layer=1, n_head=2, d_model=16)
    arrays = load_pair_arrays(tok, path, cfg)
    lengths = [2 + len(encode_text(tok, r["prompt"])) + len(encode_text(tok, r[w]))  # bos, eos
               for r in records for w in ("chosen", "rejected")]
    assert max(lengths) < cfg.max_len
    for name, v in arrays.items():
        assert v.shape == (2, max(lengths)), name
    for b, rec in enumerate(records):                       # nothing cut: every response whole
        for which in ("chosen", "rejected"):
            resp = arrays[f"{which}_response_mask"][b] == 1
            assert arrays[f"{which}_tokens"][b][resp].tolist() == encode_text(tok, rec[which]) + [EOS_ID]

# ----------------------------------------------------------------------------- reference

def test_cached_reference_logps_equal_fresh_ones_and_reference_never_moves():
    rng = np.random.default_rng(4)
    ref_params, arrays = tiny_params(5), pair_batch(rng, B=40)
    for name in ("tokens", "attention_mask", "response_mask"):   # K-wise data: responses repeat across
        arrays[f"rejected_{name}"][:10] = arrays[f"chosen_{name}"][10:20]   # pairs (scored once each)
        arrays[f"chosen_{name}"][20:25] = arrays[f"chosen_{name}"][25:30]
    ref_copy = jax.tree_util.tree_map(np.array, ref_params)
    cached = with_reference_logps(arrays, ref_params, TINY)
    idx = np.r_[0:3, 10:13, 20:22, rng.permutation(40)[:8]]           # repeats and arbitrary pairs
    fresh = concatenated_logps(ref_params, {k: v[idx] for k, v in arrays.items()}, TINY)
    np.testing.assert_allclose(cached["reference_chosen_logps"][idx], fresh[0], rtol=1e-5)
    np.testing.assert_allclose(cached["reference_rejected_logps"][idx], fresh[1], rtol=1e-5)

    dcfg = DPOConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=1)
    policy, _ = train_dpo(ref_params, cached, TINY, dcfg, quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(ref_params), jax.tree_util.tree_leaves(ref_copy)):
        assert np.array_equal(np.asarray(a), b)                      # pi_ref bit-for-bit unchanged
    again = with_reference_logps(arrays, ref_params, TINY)
    assert np.array_equal(again["reference_chosen_logps"], cached["reference_chosen_logps"])
    moved = [not np.array_equal(np.asarray(a), b) for a, b in
             zip(jax.tree_util.tree_leaves(policy), jax.tree_util.tree_leaves(ref_copy))]
    assert all(moved)                                                 # ...while the policy trained


def test_train_dpo_requires_cached_reference_logps():
    with pytest.raises(ValueError, match="with_reference_logps"):
        train_dpo(tiny_params(0), pair_batch(np.random.default_rng(0)), TINY, DPOConfig(), quiet=True)


# ----------------------------------------------------------------------------- step and variants

def test_jitted_step_returns_trl_metrics_and_raises_the_margin():
    rng = np.random.default_rng(6)
    ref_params = tiny_params(7)
    arrays = with_reference_logps(pair_batch(rng, B=16), ref_params, TINY)
    dcfg = DPOConfig(beta=0.5, steps=12, batch_size=16, lr=1e-2, warmup_steps=1)
    optimizer, step = make_dpo_step(TINY, dcfg)
    _, metrics = step(init_train_state(ref_params, optimizer), arrays)
    assert set(TRL_METRICS) | {"loss", "grad_norm"} <= set(metrics)
    # pi = pi_ref: every log-ratio is 0, up to float32 rounding (the step and the cached
    # reference are separately compiled programs, so their sums may round differently)
    assert abs(float(metrics["rewards/margins"])) < 1e-5
    np.testing.assert_allclose(float(metrics["loss"]), np.log(2.0), rtol=1e-6)
    before = evaluate_pairs(ref_params, arrays, TINY, dcfg)
    policy, history = train_dpo(ref_params, arrays, TINY, dcfg, quiet=True)
    after = evaluate_pairs(policy, arrays, TINY, dcfg)
    assert abs(before["rewards/margins"]) < 1e-5 and after["rewards/margins"] > 0.5
    assert after["rewards/accuracies"] > 0.9 and after["loss"] < before["loss"]
    assert history["loss"].shape == (12,) and history["rewards/margins"][-1] > 0


@pytest.mark.parametrize("dcfg", [DPOConfig(beta=0.3), DPOConfig(beta=0.3, label_smoothing=0.2),
                                  DPOConfig(loss_type="ipo", beta=0.3)], ids=["dpo", "cdpo", "ipo"])
def test_variants_are_dpo_py_losses_on_the_models_logps(dcfg):
    rng = np.random.default_rng(8)
    params, ref_params = tiny_params(9), tiny_params(10)
    batch = with_reference_logps(pair_batch(rng), ref_params, TINY)
    loss, metrics = dpo_batch_loss(params, batch, TINY, dcfg)
    pw, pl = (np.asarray(x, np.float64) for x in concatenated_logps(params, batch, TINY))
    h = (pw - batch["reference_chosen_logps"]) - (pl - batch["reference_rejected_logps"])
    log_sig = lambda z: -np.logaddexp(0.0, -z)
    eps = dcfg.label_smoothing
    expected = (np.mean((h - 1 / (2 * dcfg.beta)) ** 2) if dcfg.loss_type == "ipo" else
                np.mean(-(1 - eps) * log_sig(dcfg.beta * h) - eps * log_sig(-dcfg.beta * h)))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert set(TRL_METRICS) <= set(metrics)


def test_config_rejects_bad_values():
    for bad in ({"loss_type": "kto"}, {"beta": 0.0}, {"label_smoothing": 0.5},
                {"loss_type": "ipo", "label_smoothing": 0.1}):
        with pytest.raises(ValueError, match="DPOConfig"):
            DPOConfig(**bad)


# ----------------------------------------------------------------------------- diagnostics

def test_sequence_logratios_on_left_padded_generations():
    """k1 terms log pi(y|x) - log pi_ref(y|x) of a LEFT-padded generated batch equal the same
    rows right-padded; they are exactly 0 when pi == pi_ref."""
    rng = np.random.default_rng(11)
    params, ref_params = tiny_params(12), tiny_params(13)
    tokens, attn, resp, _ = random_rows(rng, 3, 10, TINY.vocab_size)
    shift = (10 - attn.sum(1))                                        # roll each row to the right
    left = [np.stack([np.roll(a[b], shift[b]) for b in range(3)]) for a in (tokens, attn, resp)]
    gen = Generation(*(jnp.asarray(a) for a in left), logprobs=jnp.zeros((3, 10)))
    got = np.asarray(sequence_logratios(params, ref_params, gen, TINY))
    batch = {"chosen_tokens": tokens, "chosen_attention_mask": attn, "chosen_response_mask": resp,
             "rejected_tokens": tokens, "rejected_attention_mask": attn, "rejected_response_mask": resp}
    expected = np.asarray(concatenated_logps(params, batch, TINY)[0]) - np.asarray(
        concatenated_logps(ref_params, batch, TINY)[0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(sequence_logratios(params, params, gen, TINY)) == 0.0)


def test_implicit_reward_is_beta_times_the_log_ratio(tok):
    cfg = GPTConfig(vocab_size=512, max_len=48, n_layer=1, n_head=2, d_model=16)
    params, ref_params = init_params(jax.random.PRNGKey(0), cfg), init_params(jax.random.PRNGKey(1), cfg)
    record = {"prompt": "What's the capital of France?", "chosen": " The capital of France is Paris.",
              "rejected": " The capital of France is Berlin."}
    arrays = encode_pairs(tok, [record], 48)
    chosen_rewards, rejected_rewards = implicit_rewards(params, ref_params, arrays, cfg, beta=0.2)
    lw, ll = (np.asarray(x)[0] for x in concatenated_logps(params, arrays, cfg))
    rw, rl = (np.asarray(x)[0] for x in concatenated_logps(ref_params, arrays, cfg))
    np.testing.assert_allclose([chosen_rewards[0], rejected_rewards[0]], [0.2 * (lw - rw), 0.2 * (ll - rl)],
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.stack(implicit_rewards(params, params, arrays, cfg, beta=0.2)) == 0.0)


def test_dpo_ptx_adds_gamma_times_the_written_out_lm_loss():
    rng, gamma = np.random.default_rng(3), 0.6
    params, ref_params = tiny_params(0), tiny_params(1)
    batch = with_reference_logps(pair_batch(rng), ref_params, TINY)
    ptx_tokens, ptx_mask, _, _ = random_rows(rng, 4, 10, TINY.vocab_size)
    batch = {**batch, "ptx_tokens": ptx_tokens, "ptx_attention_mask": ptx_mask, "ptx_loss_mask": ptx_mask}
    loss0, _ = dpo_batch_loss(params, batch, TINY, DPOConfig())
    loss1, metrics = dpo_batch_loss(params, batch, TINY, DPOConfig(ptx_coef=gamma))
    lm = written_out_lm_loss(forward(params, jnp.asarray(ptx_tokens), jnp.asarray(ptx_mask), TINY).logits,
                             ptx_tokens, ptx_mask)
    np.testing.assert_allclose(float(metrics["loss/ptx"]), lm, rtol=1e-5)
    np.testing.assert_allclose(float(loss1), float(loss0) + gamma * lm, rtol=1e-5)
    with pytest.raises(ValueError, match="ptx"):
        train_dpo(params, batch, TINY, DPOConfig(ptx_coef=gamma), quiet=True)
