"""Mixed precision: compute_dtype="bfloat16" against the float32 model, same float32 params.

The recipe (Micikevicius et al. 2018, "Mixed Precision Training"; bf16 as in Kalamkar et al.
2019): master weights stay float32, matmuls and activations run in bfloat16 (8 mantissa bits,
relative rounding 2^-9 ~ 0.2%), and the numerically touchy reductions — LayerNorm statistics,
softmax, logits, log-softmax — run in float32.  Stated tolerances on a tiny model whose params
carry N(0, 0.1) noise (so logits are far from flat, |logit| up to ~2):

    token log-probs      max |logp_bf16 - logp_fp32|           <= 0.05 nats   (measured ~0.01)
    LM loss, DPO loss    |L_bf16 - L_fp32| / |L_fp32|          <= 2%
    gradients            dtype float32; cosine(g_bf16, g_fp32) >= 0.99 per leaf

and, so the tests cannot pass by accident, bf16 must really be used: the jaxpr holds bf16
matmuls and the log-probs differ from float32 by more than 1e-4.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import model
from minirlhf.dpo import dpo_loss
from minirlhf.pretrain import lm_loss

CFG = model.GPTConfig(vocab_size=64, max_len=16, n_layer=2, n_head=2, d_model=32)
B, T = 8, 16
LOGP_ATOL, LOSS_RTOL, GRAD_COS = 0.05, 0.02, 0.99


def cfg_for(dtype: str, attention: str = "explicit") -> model.GPTConfig:
    return dataclasses.replace(CFG, compute_dtype=dtype, attention=attention)


def noisy_params(seed: int, std: float = 0.1) -> dict:
    params = model.init_params(jax.random.PRNGKey(seed), CFG)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1000), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + std * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def sequences(seed: int) -> dict:
    """Right-padded <bos> prompt response <eos> rows with response_mask from column 4."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, CFG.vocab_size, (B, T)).astype(np.int32)
    lengths = rng.integers(T // 2, T + 1, B)
    attn = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    tokens[:, 0], tokens[np.arange(B), lengths - 1] = 1, 2
    resp = attn * (np.arange(T)[None] >= 4)
    return {"tokens": jnp.asarray(tokens * attn), "attention_mask": jnp.asarray(attn),
            "response_mask": jnp.asarray(resp, jnp.int32)}


PARAMS, REF_PARAMS = noisy_params(0), noisy_params(1)
CHOSEN, REJECTED = sequences(0), sequences(1)


def logits_fn(params, s, cfg):
    return model.forward(params, s["tokens"], s["attention_mask"], cfg).logits     # [B, T, V]


_logits = jax.jit(logits_fn, static_argnames="cfg")


def seq_logps(params, s, cfg):                                                      # [B]
    return model.masked_sum(model.token_logprobs(_logits(params, s, cfg), s["tokens"]), s["response_mask"])


def lm(params, cfg):
    return lm_loss(params, {**CHOSEN, "loss_mask": CHOSEN["response_mask"]}, cfg)[0]


def dpo(params, cfg):
    ref_c, ref_r = (seq_logps(REF_PARAMS, s, cfg_for("float32")) for s in (CHOSEN, REJECTED))
    return dpo_loss(seq_logps(params, CHOSEN, cfg), seq_logps(params, REJECTED, cfg),
                    ref_c, ref_r, beta=0.1)[0]


def rel(a, b) -> float:
    return abs(float(a) - float(b)) / abs(float(b))


@pytest.mark.parametrize("attention", ["explicit", "fused"])
def test_bf16_logits_are_fp32_and_logps_close(attention):
    lg32 = _logits(PARAMS, CHOSEN, cfg_for("float32", attention))
    lg16 = _logits(PARAMS, CHOSEN, cfg_for("bfloat16", attention))
    assert lg16.dtype == jnp.float32                                    # logits in float32
    lp32, lp16 = (model.token_logprobs(x, CHOSEN["tokens"]) for x in (lg32, lg16))
    assert lp16.dtype == jnp.float32
    real = np.asarray(CHOSEN["attention_mask"][:, 1:]) > 0              # scored, non-pad tokens
    err = np.abs(np.asarray(lp16 - lp32)[:, 1:])[real]
    assert err.max() <= LOGP_ATOL, err.max()
    assert err.max() > 1e-4, "bf16 gave float32 results: compute_dtype is not in effect"


def test_bf16_really_runs_bf16_matmuls():
    jaxpr = str(jax.make_jaxpr(lambda p: logits_fn(p, CHOSEN, cfg_for("bfloat16")))(PARAMS))
    assert "bf16" in jaxpr and "dot_general" in jaxpr


def test_bf16_lm_loss_within_2_percent():
    l32, l16 = lm(PARAMS, cfg_for("float32")), lm(PARAMS, cfg_for("bfloat16"))
    assert l16.dtype == jnp.float32
    assert rel(l16, l32) <= LOSS_RTOL, (float(l16), float(l32))


def test_bf16_dpo_loss_within_2_percent():
    l32, l16 = dpo(PARAMS, cfg_for("float32")), dpo(PARAMS, cfg_for("bfloat16"))
    assert abs(float(l32) - np.log(2)) > 1e-3          # policy != reference: a non-trivial loss
    assert rel(l16, l32) <= LOSS_RTOL, (float(l16), float(l32))


def test_bf16_gradients_are_fp32_master_weights_and_aligned():
    g32 = jax.jit(jax.grad(lm), static_argnums=1)(PARAMS, cfg_for("float32"))
    g16 = jax.jit(jax.grad(lm), static_argnums=1)(PARAMS, cfg_for("bfloat16"))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g16), jax.tree_util.tree_leaves(g32)):
        assert a.dtype == jnp.float32, jax.tree_util.keystr(path)     # fp32 grads of fp32 params
        a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
        cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        assert cos >= GRAD_COS, (jax.tree_util.keystr(path), cos)
