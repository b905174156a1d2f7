"""Which weights an alignment stage trains (training.TRAINABLE): "all" or "final_norm" (only ln_f).

The final-norm gradient is checked against the LayerNorm's backward pass written out in NumPy;
DPO and PPO runs are checked to move exactly the weights they are allowed to move.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_dpo_train import TINY, pair_batch, random_rows
from test_ppo_train import CFG, MODEL, prompts

from minirlhf import ppo_train
from minirlhf.dpo_train import DPOConfig, evaluate_pairs, train_dpo, with_reference_logps
from minirlhf.model import (
    cross_entropy_loss,
    forward,
    init_params,
    init_scalar_head,
    tempered,
    token_logprobs,
)
from minirlhf.training import gpt_labels, stop_frozen


def perturbed_params(seed, cfg=TINY):
    """A tiny GPT whose ln_f gain and bias are not the trivial (1, 0), so both gradients matter."""
    params = init_params(jax.random.PRNGKey(seed), cfg)
    k_g, k_b = jax.random.split(jax.random.PRNGKey(seed + 100))
    params["ln_f"] = {"g": 1.0 + 0.2 * jax.random.normal(k_g, (cfg.d_model,)),
                      "b": 0.1 * jax.random.normal(k_b, (cfg.d_model,))}
    return params


def leaves_by_name(tree):
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_final_norm_gradient_equals_the_written_out_layer_norm_backward():
    """With only ln_f trainable, h = g * xhat + b and logits = h W^T (tied embedding W), so

        dL/dz_{t-1} = (softmax(z_{t-1}) - onehot(x_t)) m_t / N        (next-token cross-entropy)
        dL/dh       = dL/dz W,     dL/dg = sum_{b,t} dL/dh * xhat,     dL/db = sum_{b,t} dL/dh

    with xhat = (h - b) / g recovered from the hidden states; every other gradient is exactly 0."""
    params = perturbed_params(0)
    tokens, attn, resp, _ = random_rows(np.random.default_rng(0), 5, 10, TINY.vocab_size)

    def loss(p):
        p = stop_frozen(p, gpt_labels(p, "final_norm"))
        return cross_entropy_loss(forward(p, tokens, attn, TINY).logits, tokens, resp)

    grads = jax.jit(jax.grad(loss))(params)         # one compiled program, not op-by-op dispatch
    out = forward(params, tokens, attn, TINY)
    h, z = np.asarray(out.hidden, np.float64), np.asarray(out.logits, np.float64)   # [B, T, D], [B, T, V]
    W = np.asarray(params["wte"], np.float64)                                       # [V, D]
    g, b = (np.asarray(params["ln_f"][k], np.float64) for k in ("g", "b"))
    m = resp.astype(np.float64)
    m[:, 0] = 0                                         # column 0 predicts nothing
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dz = np.zeros_like(z)
    onehot = np.eye(TINY.vocab_size)[tokens[:, 1:]]     # [B, T-1, V]: the token each position predicts
    dz[:, :-1] = (p[:, :-1] - onehot) * m[:, 1:, None] / m.sum()
    dh = dz @ W                                         # [B, T, D]
    xhat = (h - b) / g
    np.testing.assert_allclose(grads["ln_f"]["g"], (dh * xhat).sum((0, 1)), rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(grads["ln_f"]["b"], dh.sum((0, 1)), rtol=2e-4, atol=1e-7)
    for name, grad in leaves_by_name(grads).items():
        if "ln_f" not in name:
            assert np.all(grad == 0), name

    full = jax.jit(jax.grad(
        lambda p: cross_entropy_loss(forward(p, tokens, attn, TINY).logits, tokens, resp)))(params)
    np.testing.assert_allclose(grads["ln_f"]["g"], full["ln_f"]["g"], rtol=1e-6)  # the same ln_f gradient
    assert float(loss(params)) == pytest.approx(float(jax.jit(loss)(params)), rel=1e-6)


def test_labels_all_trains_everything_and_unknown_regimes_are_rejected():
    params = init_params(jax.random.PRNGKey(0), TINY)
    assert set(jax.tree_util.tree_leaves(gpt_labels(params, "all"))) == {"train"}
    labels = leaves_by_name(gpt_labels(params, "final_norm"))
    assert {k for k, v in labels.items() if v == "train"} == {"['ln_f']['g']", "['ln_f']['b']"}
    with pytest.raises(ValueError, match="trainable.*'lora'"):
        gpt_labels(params, "lora")
    with pytest.raises(ValueError, match="DPOConfig.trainable"):
        DPOConfig(trainable="lora")
    with pytest.raises(ValueError, match="PPOConfig.trainable"):
        ppo_train.PPOConfig(trainable="ln_f")


def test_final_norm_dpo_moves_only_ln_f_even_with_weight_decay_and_learns():
    rng = np.random.default_rng(1)
    ref_params = perturbed_params(3)
    arrays = with_reference_logps(pair_batch(rng, B=16), ref_params, TINY)
    dcfg = DPOConfig(beta=0.5, steps=20, batch_size=16, lr=0.1, warmup_steps=1, weight_decay=0.1,
                     trainable="final_norm")
    policy, _ = train_dpo(ref_params, arrays, TINY, dcfg, quiet=True)
    before, after = leaves_by_name(ref_params), leaves_by_name(policy)
    for name in before:
        assert np.array_equal(before[name], after[name]) == ("ln_f" not in name), name
    assert evaluate_pairs(policy, arrays, TINY, dcfg)["rewards/margins"] > 0.1


def test_final_norm_ppo_moves_only_ln_f_and_the_value_function():
    ref = perturbed_params(0, MODEL)
    k_rm, k_head, k_v = jax.random.split(jax.random.PRNGKey(1), 3)
    rm = {"backbone": init_params(k_rm, MODEL), "head": init_scalar_head(k_head, MODEL)}
    cfg = dataclasses.replace(CFG, trainable="final_norm", lr=1e-2)
    state = ppo_train.init_ppo_state(ref, rm, MODEL, cfg, k_v)
    pt, pm = prompts()
    new_state, out = ppo_train.ppo_iteration(state, ref, rm, pt, pm, jax.random.PRNGKey(5), cfg=cfg,
                                        model_cfg=MODEL)
    assert np.isfinite(float(out.metrics["loss/total"]))
    before = leaves_by_name(state.train_state.params)
    after = leaves_by_name(new_state.train_state.params)
    for name in before:
        moves = "['value']" in name or "['ln_f']" in name
        assert np.array_equal(before[name], after[name]) == (not moves), name
    assert jnp.all(jnp.isfinite(new_state.train_state.params["policy"]["ln_f"]["g"]))


def test_tempered_weights_give_the_tempered_distribution():
    """log softmax(z / T) from the original weights == log softmax(z') from (g/T, b/T)."""
    params = perturbed_params(4)
    tokens, attn, _, _ = random_rows(np.random.default_rng(2), 4, 10, TINY.vocab_size)
    for T in (0.5, 0.8, 2.0):
        original = token_logprobs(forward(params, tokens, attn, TINY).logits, tokens, temperature=T)
        as_weights = token_logprobs(forward(tempered(params, T), tokens, attn, TINY).logits, tokens)
        np.testing.assert_allclose(as_weights, original, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="temperature > 0"):
        tempered(params, 0.0)
