"""The tiny GPT checked against the math written out independently: causality by exact
zero gradients, the KV cache and both attention paths against the full forward pass,
padding invariance, the cross-entropy gradient in closed form, finite differences
(float64), and log-prob sums by a Python loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from minirlhf import model
from minirlhf.fused_attention import real_first_causal_attention
from minirlhf.model import GPTConfig
from minirlhf.sampling import decode_step, prefill_cache

CFG = GPTConfig(vocab_size=40, max_len=16, n_layer=2, n_head=2, d_model=32)
TOL = dict(atol=2e-5, rtol=2e-5)  # float32 agreement between two orderings of the same sums
forward = jax.jit(model.forward, static_argnames="cfg")  # one compile per shape, not eager ops


def make_params(seed: int, cfg: GPTConfig = CFG, std: float = 0.3) -> dict:
    """Every leaf N(0, std) (LayerNorm gains 1 + N(0, std)): unlike the N(0, 0.02) init, attention
    is far from uniform and logits are far from flat, so a wrong mask or position shows up."""
    rng = np.random.default_rng(seed)            # NumPy: no XLA compile per leaf shape
    init = lambda path, x: (path[-1].key == "g") + std * rng.standard_normal(x.shape)
    shapes = jax.eval_shape(lambda key: model.init_params(key, cfg), jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(jnp.float32, jax.tree_util.tree_map_with_path(init, shapes))


def random_tokens(seed: int, shape, low: int = 3) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(seed), shape, low, CFG.vocab_size, jnp.int32)


def left_pad(rows, width: int, pad_fill=None):
    """Python lists of ids -> LEFT-padded tokens [B, width] and mask [B, width].
    pad_fill: array [B, width] of ids to put in pad slots (default 0 = <pad>)."""
    tokens = np.zeros((len(rows), width), np.int32) if pad_fill is None else np.array(pad_fill)
    mask = np.zeros((len(rows), width), np.int32)
    for b, row in enumerate(rows):
        tokens[b, width - len(row):] = row
        mask[b, width - len(row):] = 1
    return jnp.asarray(tokens), jnp.asarray(mask)


def to_f64(tree):
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), tree)


# ----------------------------------------------------------------------------- causality

@pytest.mark.parametrize("attention", ["explicit", "fused"])
def test_causality_exact_zero_gradient_from_future_positions(attention):
    """d logits[t] / d wpe[s] is exactly 0 for s > t and nonzero for s <= t.

    Without padding, column s is the only column that reads wpe[s], so perturbing wpe row by
    row perturbs the input embedding of one position at a time, through `forward` itself."""
    cfg = dataclasses.replace(CFG, attention=attention)
    params, T = make_params(0, cfg), 8
    tokens, mask = random_tokens(1, (1, T)), jnp.ones((1, T), jnp.int32)
    proj = jax.random.normal(jax.random.PRNGKey(2), (cfg.vocab_size,))  # a generic scalar per t

    @jax.jit
    @jax.grad
    def output_t(delta, t):                                            # delta: [Tmax, D]
        logits = model.forward({**params, "wpe": params["wpe"] + delta}, tokens, mask, cfg).logits
        return logits[0, t] @ proj

    for t in range(T):
        norms = np.abs(np.asarray(output_t(jnp.zeros_like(params["wpe"]), t))).sum(-1)  # [Tmax]
        assert np.all(norms[t + 1:] == 0.0), f"position {t} sees the future: {norms}"
        assert np.all(norms[: t + 1] > 1e-6), f"position {t} ignores its past: {norms}"


# ----------------------------------------------------------------------------- KV cache

@pytest.mark.parametrize("attention", ["explicit", "fused"])
def test_kv_cache_decode_matches_full_forward_with_left_padding(attention):
    """Prefill a left-padded batch of prompts of lengths 6, 3, 1, then feed tokens one at a time
    through `decode_step`; each step's logits, hidden state and cache equal a fresh forward pass
    over the whole sequence so far."""
    cfg = dataclasses.replace(CFG, attention=attention)
    params, P, N = make_params(3, cfg), 6, 7
    rows = [[1, 5, 9, 4, 7, 8], [1, 12, 30], [1]]
    B, S = len(rows), P + N
    prompt, pmask = left_pad(rows, P)
    new = random_tokens(4, (B, N))                                      # the tokens fed back
    tokens = jnp.concatenate([prompt, new], axis=1)                     # [B, S]

    # reference: the full forward pass over each prefix tokens[:, :P+i+1] (all N prefixes in
    # one call, each right-padded to S; right padding is invisible, see the padding tests)
    prefix_mask = jnp.stack([jnp.pad(pmask, ((0, 0), (0, N))).at[:, P:P + i + 1].set(1)
                             for i in range(N)])                        # [N, B, S]
    full = forward(params, jnp.tile(tokens, (N, 1)), prefix_mask.reshape(N * B, S), cfg)

    out = forward(params, prompt, pmask, cfg)                           # prefill
    cache = prefill_cache(out.kv, N)                                    # L x [B, H, S, Dh]
    pos = jnp.array([len(r) for r in rows])                             # next position per row
    step = jax.jit(decode_step, static_argnames="cfg")
    for i in range(N):
        col = P + i
        logits, hidden, cache = step(params, new[:, i], pos + i, col, cache, prefix_mask[i], cfg=cfg)
        ref = slice(i * B, (i + 1) * B)
        np.testing.assert_allclose(logits, full.logits[ref, col], **TOL, err_msg=f"step {i}")
        np.testing.assert_allclose(hidden, full.hidden[ref, col], **TOL, err_msg=f"step {i}")
    real = np.asarray(prefix_mask[-1], bool)                            # pad keys are never read
    for c, f in zip(cache, full.kv):                                    # [L, B(*N), S, H, Dh]
        c = np.stack(c).swapaxes(2, 3)                                  # head-major -> [L, B, S, H, Dh]
        np.testing.assert_allclose(c[:, real], np.asarray(f)[:, (N - 1) * B:][:, real], **TOL)


# ----------------------------------------------------------------------------- attention paths

def test_explicit_attention_equals_fused_with_padding():
    params = make_params(5)
    rows = [[1, 5, 9, 4, 7, 8, 3, 2], [1, 12, 30], [1, 7, 7, 7, 9]]
    T = 10
    garbage = random_tokens(6, (3, T))                                  # pad slots hold junk ids
    left_tokens, left_mask = left_pad(rows, T, pad_fill=garbage)
    right_tokens = np.array(garbage)
    right_mask = np.zeros((3, T), np.int32)
    for b, r in enumerate(rows):
        right_tokens[b, : len(r)], right_mask[b, : len(r)] = r, 1
    for tokens, mask in [(left_tokens, left_mask), (jnp.asarray(right_tokens), jnp.asarray(right_mask))]:
        outs = [forward(params, tokens, mask, dataclasses.replace(CFG, attention=a))
                for a in ("explicit", "fused")]
        real = np.asarray(mask, bool)
        for a, b in zip(outs[0][:2], outs[1][:2]):                      # logits, hidden
            assert np.all(np.isfinite(np.asarray(b)))                   # pads too: no NaN rows
            np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], **TOL)


def test_real_first_causal_attention_equals_explicit_for_every_padding_layout():
    """The GPU's fused path (real tokens moved to the front, attended with per-row lengths, moved
    back) run here with XLA as the kernel: outputs and q/k/v gradients at real tokens equal the
    written-out attention for right, left, both-sided and holed padding."""
    B, T, H, Dh = 5, 9, 2, 4
    q, k, v = (jax.random.normal(jax.random.PRNGKey(s), (B, T, H, Dh)) for s in (10, 11, 12))
    mask = jnp.array([[1] * 9,                                            # no padding
                      [1] * 6 + [0] * 3,                                  # right
                      [0] * 4 + [1] * 5,                                  # left
                      [0, 0, 1, 1, 1, 1, 0, 0, 0],                        # both sides
                      [0, 1, 1, 0, 1, 0, 0, 1, 1]], jnp.int32)            # holes
    real = np.asarray(mask, bool)
    w = jax.random.normal(jax.random.PRNGKey(13), (B, T, H, Dh)) * mask[:, :, None, None]  # real rows only

    def outputs(fn):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out,) + vjp(w)

    explicit = outputs(lambda q, k, v: model.attend(q, k, v, mask, CFG, causal=True))
    real_first = outputs(lambda q, k, v: real_first_causal_attention(q, k, v, mask))
    np.testing.assert_allclose(np.asarray(real_first[0])[real], np.asarray(explicit[0])[real], **TOL)
    for a, b in zip(real_first[1:], explicit[1:]):                      # dq, dk, dv
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)
    assert np.all(np.asarray(real_first[0])[~real] == 0)                # pad queries give 0

# ----------------------------------------------------------------------------- padding

def test_right_padding_changes_no_real_logit():
    params = make_params(7)
    tokens = random_tokens(8, (2, 6))
    ref = forward(params, tokens, jnp.ones((2, 6), jnp.int32), CFG)
    junk = random_tokens(9, (2, 5))                                     # pad ids must not matter
    padded = forward(params, jnp.concatenate([tokens, junk], 1),
                           jnp.concatenate([jnp.ones((2, 6), jnp.int32), jnp.zeros((2, 5), jnp.int32)], 1), CFG)
    np.testing.assert_allclose(padded.logits[:, :6], ref.logits, **TOL)
    np.testing.assert_allclose(padded.hidden[:, :6], ref.hidden, **TOL)


def test_left_padded_rows_equal_their_unpadded_forward():
    """Each row of a left-padded batch gives, on its real tokens, the logits of the same row
    run alone without padding (positions come from the mask, not from the column)."""
    params = make_params(10)
    rows = [[1, 5, 9, 4, 7, 8, 3], [1, 12, 30], [1, 20]]
    T = 9
    tokens, mask = left_pad(rows, T, pad_fill=random_tokens(11, (3, T)))
    out = forward(params, tokens, mask, CFG)
    for b, r in enumerate(rows):
        alone = forward(params, jnp.array([r], jnp.int32), jnp.ones((1, len(r)), jnp.int32), CFG)
        np.testing.assert_allclose(out.logits[b, T - len(r):], alone.logits[0], **TOL)
        np.testing.assert_allclose(out.hidden[b, T - len(r):], alone.hidden[0], **TOL)


def test_positions_from_mask():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(model.positions_from_mask(mask),
                                  [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 1, 2, 3, 4]])


# ----------------------------------------------------------------------------- losses and log-probs

def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def test_cross_entropy_value_and_gradient_match_closed_form():
    """dL/dz[b, t-1] = (softmax(z[b, t-1]) - onehot(y[b, t])) m[b, t] / N, N = sum(m)."""
    B, T, V = 3, 6, CFG.vocab_size
    z = 3.0 * jax.random.normal(jax.random.PRNGKey(12), (B, T, V))
    y = random_tokens(13, (B, T), low=0)
    m = jnp.array([[0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]], jnp.float32)
    loss, grad = jax.jit(jax.value_and_grad(model.cross_entropy_loss))(z, y, m)

    zn, yn, mn = np.asarray(z, np.float64), np.asarray(y), np.asarray(m, np.float64)
    N = mn.sum()
    expected_loss, expected_grad = 0.0, np.zeros_like(zn)
    for b in range(B):
        for t in range(1, T):
            if mn[b, t]:
                p = np.exp(np_log_softmax(zn[b, t - 1]))
                expected_loss -= np.log(p[yn[b, t]]) / N
                onehot = np.eye(V)[yn[b, t]]
                expected_grad[b, t - 1] = (p - onehot) * mn[b, t] / N
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)
    assert np.all(np.asarray(grad)[:, -1] == 0.0)                      # the last logit predicts nothing


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_masked_response_logprob_sum_equals_python_loop(temperature):
    """log pi(y|x) = sum_{t: response_mask=1} log softmax(z[t-1] / T)[x_t], summed by hand."""
    params = make_params(14)
    tokens = random_tokens(15, (3, 8))
    attn = jnp.array([[1] * 8, [1] * 6 + [0] * 2, [0] * 3 + [1] * 5], jnp.int32)
    resp = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1]])
    seq_logps = jax.jit(model.sequence_logprobs, static_argnames=("cfg", "temperature"))
    got = seq_logps(params, tokens, attn, resp, cfg=CFG, temperature=temperature)

    logits = np.asarray(forward(params, tokens, attn, CFG).logits, np.float64)
    expected = []
    for b in range(3):
        total = 0.0
        for t in range(1, 8):
            if resp[b, t]:
                total += np_log_softmax(logits[b, t - 1] / temperature)[int(tokens[b, t])]
        expected.append(total)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    logps = model.token_logprobs(jnp.asarray(logits, jnp.float32), tokens, temperature)
    assert np.all(np.asarray(logps)[:, 0] == 0.0)                      # aligned: nothing scores x_0


def test_float64_forward_under_x64():
    """With x64 enabled, float64 params and compute_dtype="float64", every output is float64
    (needed by the finite-difference test below; float32 rounding swamps a 1e-4 step)."""
    with jax.enable_x64(True):
        cfg = dataclasses.replace(CFG, compute_dtype="float64")
        params = to_f64(make_params(16))
        tokens, mask = random_tokens(17, (2, 5)), jnp.ones((2, 5), jnp.int32)
        out = forward(params, tokens, mask, cfg)
        assert out.logits.dtype == out.hidden.dtype == out.kv[0].dtype == jnp.float64
        assert model.token_logprobs(out.logits, tokens).dtype == jnp.float64


def test_check_grads_float64_loss_wrt_params():
    """Reverse-mode gradient of (LM loss + reward head) w.r.t. every parameter agrees with
    central finite differences (jax.test_util.check_grads, float64, order 1)."""
    with jax.enable_x64(True):
        cfg = dataclasses.replace(CFG, compute_dtype="float64", n_layer=1, max_len=8)
        params = to_f64(make_params(18, cfg))
        head = to_f64(model.init_scalar_head(jax.random.PRNGKey(19), cfg))
        tokens = random_tokens(20, (2, 5))
        attn = jnp.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], jnp.int32)
        loss_mask = jnp.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], jnp.float64)

        def loss(params, head):
            out = forward(params, tokens, attn, cfg)
            reward = model.reward_from_hidden(head, out.hidden, attn)
            return model.cross_entropy_loss(out.logits, tokens, loss_mask) + jnp.sum(reward ** 2)

        check_grads(loss, (params, head), order=1, modes=("rev",))


# ----------------------------------------------------------------------------- heads

def test_last_token_index_left_right_and_both():
    mask = jnp.array([[0, 0, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 1, 1, 1, 0]])
    expected = [max(t for t in range(5) if row[t]) for row in np.asarray(mask)]
    np.testing.assert_array_equal(model.last_token_index(mask), expected)


def test_scalar_head_is_per_position_dot_product():
    head = model.init_scalar_head(jax.random.PRNGKey(21), CFG)
    head = {**head, "b": jnp.asarray(0.7)}
    hidden = jax.random.normal(jax.random.PRNGKey(22), (3, 5, CFG.d_model))
    values = model.scalar_head(head, hidden)
    assert values.shape == (3, 5)
    expected = np.einsum("btd,d->bt", np.asarray(hidden, np.float64), np.asarray(head["w"], np.float64)) + 0.7
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_reward_reads_last_real_token_and_ignores_padding():
    params, head = make_params(23), model.init_scalar_head(jax.random.PRNGKey(24), CFG)
    head = {**head, "b": jnp.asarray(-0.3)}
    rows = [[1, 5, 9, 4, 2], [1, 12, 30, 2], [1, 20, 2]]
    alone = []
    for r in rows:
        h = forward(params, jnp.array([r]), jnp.ones((1, len(r)), jnp.int32), CFG).hidden
        alone.append(float(np.asarray(h[0, -1], np.float64) @ np.asarray(head["w"], np.float64) - 0.3))
        single = model.reward_from_hidden(head, h, jnp.ones((1, len(r)), jnp.int32))
        np.testing.assert_allclose(single, alone[-1], rtol=1e-5)
    T = 8
    junk = random_tokens(25, (3, T))
    # right padding (training layout)
    right, rmask = np.array(junk), np.zeros((3, T), np.int32)
    for b, r in enumerate(rows):
        right[b, : len(r)], rmask[b, : len(r)] = r, 1
    h = forward(params, jnp.asarray(right), jnp.asarray(rmask), CFG).hidden
    np.testing.assert_allclose(model.reward_from_hidden(head, h, jnp.asarray(rmask)), alone, **TOL)
    # left padding
    left, lmask = left_pad(rows, T, pad_fill=junk)
    h = forward(params, left, lmask, CFG).hidden
    np.testing.assert_allclose(model.reward_from_hidden(head, h, lmask), alone, **TOL)


# ----------------------------------------------------------------------------- validation

def test_bad_config_and_too_long_input_raise_value_error():
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="attention"):
        GPTConfig(attention="flash")
    params = make_params(26)
    with pytest.raises(ValueError, match="max_len=16"):
        forward(params, jnp.ones((1, 17), jnp.int32), jnp.ones((1, 17), jnp.int32), CFG)


def test_init_params_is_gpt2_init_drawn_op_by_op_from_the_six_subkeys():
    """The seeded init is fixed (same seed, same checkpoints): weight i is std_i * N(0, 1) drawn
    with subkey split(key, 6)[i], std = 0.02, or 0.02 / sqrt(2L) for the residual projections
    w_o and w_out (Radford et al. 2019); biases 0, LayerNorm gains 1."""
    cfg = GPTConfig(vocab_size=40, max_len=12, n_layer=2, n_head=2, d_model=8)
    key = jax.random.PRNGKey(5)
    params = model.init_params(key, cfg)
    keys = jax.random.split(key, 6)
    L, D, F = cfg.n_layer, cfg.d_model, cfg.mlp_ratio * cfg.d_model
    resid = 0.02 / np.sqrt(2 * L)
    want = {"wte": (0, (40, D), 0.02), "wpe": (1, (12, D), 0.02), "w_qkv": (2, (L, D, 3 * D), 0.02),
            "w_o": (3, (L, D, D), resid), "w_in": (4, (L, D, F), 0.02), "w_out": (5, (L, F, D), resid)}
    for name, (i, shape, std) in want.items():
        got = params[name] if name in ("wte", "wpe") else params["blocks"][name]
        drawn = np.float32(std) * np.asarray(jax.random.normal(keys[i], shape, jnp.float32))
        np.testing.assert_array_equal(np.asarray(got), drawn, err_msg=name)
    for name in ("b_qkv", "b_o", "b_in", "b_out"):
        assert not np.asarray(params["blocks"][name]).any()
    for ln in (params["blocks"]["ln1"], params["blocks"]["ln2"], params["ln_f"]):
        assert np.all(np.asarray(ln["g"]) == 1) and not np.asarray(ln["b"]).any()
