"""The sampler checked against independent references: greedy decoding against a Python loop
of full forward passes, empirical token frequencies against softmax(logits / T) (chi-square),
returned log-probs against `token_logprobs` of a fresh forward pass, the cached sampler
against the uncached one, and the structure of the eos / padding layout."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import model
from minirlhf.model import GPTConfig
from minirlhf.sampling import (
    EOS_ID,
    PAD_ID,
    decode_params,
    decode_step,
    first_argmax,
    generate,
    generate_without_cache,
    prefill_cache,
    step_keys,
)

CFG = GPTConfig(vocab_size=40, max_len=16, n_layer=2, n_head=2, d_model=32)
forward = jax.jit(model.forward, static_argnames="cfg")
PROMPTS = [[1, 5, 9, 4, 7], [1, 12, 30], [1, 20], [1, 3, 3, 8]]  # left-padded to P = 5


def make_params(seed: int, std: float = 0.3) -> dict:
    """Every leaf N(0, std) (LayerNorm gains 1 + N(0, std)): logits spread over a few units, so
    the sampling distribution is far from uniform and depends on the prompt."""
    rng = np.random.default_rng(seed)            # NumPy: no XLA compile per leaf shape
    init = lambda path, x: (path[-1].key == "g") + std * rng.standard_normal(x.shape)
    shapes = jax.eval_shape(lambda key: model.init_params(key, CFG), jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(jnp.float32, jax.tree_util.tree_map_with_path(init, shapes))


def with_eos_bias(params: dict, strength: float, context_free: bool = False) -> dict:
    """Push the final hidden state towards wte[eos] so <eos> becomes likely.

    logits = LN_f(h) @ W_te^T with LN_f(h) = g * normalised(h) + b; adding c * wte[eos]/|wte[eos]|
    to b raises the eos logit by c |wte[eos]| (and shifts the others by c cos * |wte[v]|).
    context_free=True sets g = 0 and b = c * wte[eos]/|wte[eos]|: every step then draws i.i.d.
    from the one known distribution softmax(W_te b)."""
    u = params["wte"][EOS_ID] / jnp.linalg.norm(params["wte"][EOS_ID])
    if context_free:
        ln_f = {"g": jnp.zeros_like(params["ln_f"]["g"]), "b": strength * u}
    else:
        ln_f = {"g": params["ln_f"]["g"], "b": params["ln_f"]["b"] + strength * u}
    return {**params, "ln_f": ln_f}


def prompt_batch(rows=PROMPTS, P: int = 5):
    tokens, mask = np.zeros((len(rows), P), np.int32), np.zeros((len(rows), P), np.int32)
    for b, r in enumerate(rows):
        tokens[b, P - len(r):], mask[b, P - len(r):] = r, 1
    return jnp.asarray(tokens), jnp.asarray(mask)


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def assert_layout(gen, P: int, N: int):
    """Response mask is a prefix of ones per row that ends exactly at the first <eos> (or runs to
    max length); after it every token is <pad> with all masks and log-probs 0."""
    toks, attn, resp = (np.asarray(x)[:, P:] for x in (gen.tokens, gen.attention_mask, gen.response_mask))
    np.testing.assert_array_equal(np.asarray(gen.response_mask)[:, :P], 0)
    np.testing.assert_array_equal(np.asarray(gen.logprobs)[:, :P], 0.0)
    np.testing.assert_array_equal(attn, resp)
    lengths = []
    for b in range(toks.shape[0]):
        eos = np.flatnonzero(toks[b] == EOS_ID)
        n = eos[0] + 1 if len(eos) else N                         # response length incl. eos
        np.testing.assert_array_equal(resp[b], [1] * n + [0] * (N - n), err_msg=f"row {b}")
        np.testing.assert_array_equal(toks[b, n:], PAD_ID, err_msg=f"row {b}")
        np.testing.assert_array_equal(np.asarray(gen.logprobs)[b, P + n:], 0.0)
        lengths.append(n)
    return np.array(lengths)


# ----------------------------------------------------------------------------- greedy

def test_temperature_zero_equals_python_greedy_loop():
    """Greedy decoding = repeat (full forward pass, argmax of the last logits, append); a row
    that has produced <eos> appends <pad> with mask 0.  Also log-probs are at temperature 1."""
    params = with_eos_bias(make_params(0), 1.5)                  # some rows stop before N
    prompt, pmask = prompt_batch()
    N = 8
    gen = generate(params, prompt, pmask, jax.random.PRNGKey(1), cfg=CFG, max_new_tokens=N,
                   temperature=0.0)

    # the loop writes into a fixed [B, P+N] buffer whose future columns are right-padding
    # (invisible to real tokens, tests/test_model.py): one compiled forward for all N steps
    tokens = np.pad(np.asarray(prompt), ((0, 0), (0, N)))
    mask = np.pad(np.asarray(pmask), ((0, 0), (0, N)))
    done = np.zeros(len(PROMPTS), bool)
    expected_logps = []
    for i in range(N):
        col = 5 + i
        logits = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(mask), CFG).logits[:, col - 1])
        nxt = np.where(done, PAD_ID, logits.argmax(-1))
        expected_logps.append(np.where(done, 0.0, np_log_softmax(logits)[np.arange(len(nxt)), nxt]))
        tokens[:, col], mask[:, col] = nxt, ~done
        done |= nxt == EOS_ID
    np.testing.assert_array_equal(gen.tokens, tokens)
    np.testing.assert_array_equal(gen.attention_mask, mask)
    np.testing.assert_allclose(np.asarray(gen.logprobs)[:, 5:], np.stack(expected_logps, 1), atol=1e-5)
    lengths = assert_layout(gen, 5, N)
    assert lengths.min() < N                                      # the eos path was exercised


# ----------------------------------------------------------------------------- distribution

def chi2_threshold(df: int, z: float = 4.0) -> float:
    """Upper quantile of chi-square(df) by the Wilson-Hilferty cube-root normal approximation;
    z = 4 is the one-sided 3e-5 level, so a correct sampler fails about once in 30 000 seeds."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def chi2_statistic(counts, probs, min_expected: float = 5.0):
    """Pearson's X^2 = sum (O - E)^2 / E, pooling the categories with E < min_expected into one
    bin (so the chi-square approximation holds).  Returns (X^2, degrees of freedom)."""
    n = counts.sum()
    expected = n * probs
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum() - 1)


def target_probs(logits, temperature: float, top_k: int):
    z = np.asarray(logits, np.float64) / temperature
    if top_k:
        z = np.where(z < np.sort(z)[-top_k], -np.inf, z)
    return np.exp(np_log_softmax(z))


@pytest.mark.parametrize("temperature,top_k,wrong", [
    (1.0, 0, {"temperature": 0.7, "top_k": 0}),
    (0.7, 0, {"temperature": 1.0, "top_k": 0}),
    (1.0, 5, {"temperature": 1.0, "top_k": 0}),
])
def test_first_token_frequencies_match_softmax(temperature, top_k, wrong):
    """4000 draws of the first response token for one prompt: Pearson's chi-square against
    softmax(logits / T) (top-k renormalised) stays below the 3e-5 quantile, and against the
    `wrong` distribution (other T, or no top-k) it is far above it (the test has power)."""
    params = make_params(2)
    B = 4000
    prompt, pmask = prompt_batch([PROMPTS[0]] * B)
    gen = generate(params, prompt, pmask, jax.random.PRNGKey(3), cfg=CFG, max_new_tokens=1,
                   temperature=temperature, top_k=top_k)
    counts = np.bincount(np.asarray(gen.tokens[:, -1]), minlength=CFG.vocab_size)
    logits = forward(params, prompt[:1], pmask[:1], CFG).logits[0, -1]

    probs = target_probs(logits, temperature, top_k)
    assert probs.max() < 0.5 and (probs > 1e-3).sum() >= 5          # a non-trivial distribution
    stat, df = chi2_statistic(counts, probs)
    assert stat < chi2_threshold(df), (stat, df, chi2_threshold(df))
    if top_k:
        assert counts[probs == 0].sum() == 0                         # never outside the top k
    wrong_stat, wrong_df = chi2_statistic(counts, target_probs(logits, **wrong))
    assert wrong_stat > 3 * chi2_threshold(wrong_df), (wrong_stat, wrong_df)


def test_top_k_never_samples_outside_the_top_k():
    """Every sampled token, at every step, is among the k largest logits of a fresh forward pass
    over the generated prefix, and its log-prob is the top-k renormalised log-softmax."""
    params, k, N = make_params(4), 3, 8
    prompt, pmask = prompt_batch(PROMPTS * 16)                        # B = 64
    gen = generate(params, prompt, pmask, jax.random.PRNGKey(5), cfg=CFG, max_new_tokens=N,
                   temperature=1.0, top_k=k)
    logits = np.asarray(forward(params, gen.tokens, gen.attention_mask, CFG).logits, np.float64)
    toks, resp = np.asarray(gen.tokens), np.asarray(gen.response_mask)
    for b, t in zip(*np.nonzero(resp)):
        z = logits[b, t - 1]
        kth = np.sort(z)[-k]
        assert z[toks[b, t]] >= kth - 1e-4, (b, t, np.argsort(z)[-k:], toks[b, t])
        renorm = np_log_softmax(np.where(z < kth, -np.inf, z))
        np.testing.assert_allclose(gen.logprobs[b, t], renorm[toks[b, t]], atol=1e-4)


# ----------------------------------------------------------------------------- keys

def test_same_key_same_samples_different_key_different_samples():
    params = make_params(6)
    prompt, pmask = prompt_batch()
    run = lambda seed: generate(params, prompt, pmask, jax.random.PRNGKey(seed), cfg=CFG,
                                max_new_tokens=8, temperature=1.0)
    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.mean(np.asarray(a.tokens)[:, 5:] != np.asarray(c.tokens)[:, 5:]) > 0.3


# ----------------------------------------------------------------------------- eos

def test_stops_at_eos_then_pads():
    """With the context-free eos bias every step draws <eos> with the same probability q, so the
    response length is geometric: P(length = 1) = q, P(length = N) = (1 - q)^(N - 1)."""
    base = make_params(8)
    wte = np.asarray(base["wte"], np.float64)
    q_of = lambda s: np.exp(np_log_softmax(s * wte @ wte[EOS_ID] / np.linalg.norm(wte[EOS_ID])))[EOS_ID]
    strength = min(np.linspace(0.0, 6.0, 61), key=lambda s: abs(q_of(s) - 0.3))
    params, q = with_eos_bias(base, strength, context_free=True), q_of(strength)
    assert 0.25 < q < 0.35

    B, N = 512, 6
    prompt, pmask = prompt_batch(PROMPTS * (B // 4))
    gen = generate(params, prompt, pmask, jax.random.PRNGKey(9), cfg=CFG, max_new_tokens=N,
                   temperature=1.0)
    lengths = assert_layout(gen, 5, N)
    for n, p in [(1, q), (N, (1 - q) ** (N - 1))]:
        se = np.sqrt(p * (1 - p) / B)
        assert abs(np.mean(lengths == n) - p) < 5 * se, (n, np.mean(lengths == n), p)
    # greedy with eos the argmax: one <eos> then pads
    greedy = generate(with_eos_bias(params, 20.0, True), prompt[:4], pmask[:4],
                      jax.random.PRNGKey(10), cfg=CFG, max_new_tokens=N, temperature=0.0)
    np.testing.assert_array_equal(np.asarray(greedy.tokens)[:, 5:], [[EOS_ID] + [PAD_ID] * (N - 1)] * 4)
    np.testing.assert_array_equal(assert_layout(greedy, 5, N), 1)


# ----------------------------------------------------------------------------- log-probs

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_returned_logprobs_equal_forward_token_logprobs(temperature):
    """Generation.logprobs = token_logprobs(forward(generated).logits / T) on the response mask."""
    params = with_eos_bias(make_params(11), 1.5)                 # some rows stop early
    prompt, pmask = prompt_batch(PROMPTS * 4)
    gen = generate(params, prompt, pmask, jax.random.PRNGKey(12), cfg=CFG, max_new_tokens=8,
                   temperature=temperature)
    logits = forward(params, gen.tokens, gen.attention_mask, CFG).logits
    expected = model.token_logprobs(logits, gen.tokens, temperature) * gen.response_mask
    np.testing.assert_allclose(gen.logprobs, expected, atol=2e-5)
    assert assert_layout(gen, 5, 8).min() < 8                    # the eos path was exercised


def test_float64_generation_logprobs_match_forward_to_1e_10():
    """Under x64 with compute_dtype="float64" the sampler's log-probs are float64 and agree with
    a fresh forward pass to 1e-10 (e.g. so a float64 PPO test sees ratio = 1 at the start)."""
    with jax.enable_x64(True):
        cfg = dataclasses.replace(CFG, compute_dtype="float64")
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), make_params(16))
        prompt, pmask = prompt_batch()
        gen = generate(params, prompt, pmask, jax.random.PRNGKey(17), cfg=cfg, max_new_tokens=4,
                       temperature=0.7)
        logits = forward(params, gen.tokens, gen.attention_mask, cfg).logits
        expected = model.token_logprobs(logits, gen.tokens, 0.7) * gen.response_mask
        assert gen.logprobs.dtype == jnp.float64
        np.testing.assert_allclose(gen.logprobs, expected, atol=1e-10)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.8, 5)])
def test_generate_equals_generate_without_cache(temperature, top_k):
    params = with_eos_bias(make_params(13), 1.5)
    prompt, pmask = prompt_batch(PROMPTS * 2)
    kw = {"cfg": CFG, "max_new_tokens": 8, "temperature": temperature, "top_k": top_k}
    a = generate(params, prompt, pmask, jax.random.PRNGKey(14), **kw)
    b = generate_without_cache(params, prompt, pmask, jax.random.PRNGKey(14), **kw)
    for name in ("tokens", "attention_mask", "response_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-5)


def test_too_long_generation_raises_value_error():
    prompt, pmask = prompt_batch()
    with pytest.raises(ValueError, match="max_len=16"):
        generate(make_params(15), prompt, pmask, jax.random.PRNGKey(0), cfg=CFG, max_new_tokens=12)


# ----------------------------------------------------------------------------- noise drawn up front

def test_step_keys_are_the_split_chain():
    """step_keys(key, n)[i] is the `sub` of the i-th `key, sub = jax.random.split(key)`."""
    key, subs = jax.random.PRNGKey(23), []
    for _ in range(6):
        key, sub = jax.random.split(key)
        subs.append(sub)
    np.testing.assert_array_equal(step_keys(jax.random.PRNGKey(23), 6), np.stack(subs))


def test_first_argmax_is_argmax_with_ties_and_minus_inf():
    """The first index of the row maximum, as jnp.argmax: ties, -inf (top-k masked) entries,
    an all-equal row."""
    rng = np.random.default_rng(24)
    z = rng.integers(0, 4, (64, 9)).astype(np.float32)              # many ties
    z[rng.random(z.shape) < 0.3] = -np.inf
    z[0] = 1.0
    z[1, :] = -np.inf
    z[1, 5] = -3.0
    np.testing.assert_array_equal(first_argmax(jnp.asarray(z)), np.argmax(z, axis=-1))


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 4)])
def test_generate_draws_what_per_step_categorical_draws(temperature, top_k):
    """An independent loop through `decode_step` on the stacked parameters, drawing each token
    with jax.random.categorical inside the loop (key, sub = split(key) per step), gives the
    tokens and log-probs `generate` gives with its noise drawn before the loop."""
    params = make_params(25)
    prompt, pmask = prompt_batch(PROMPTS * 4)
    N, P = 8, 5
    gen = generate(params, prompt, pmask, jax.random.PRNGKey(26), cfg=CFG, max_new_tokens=N,
                   temperature=temperature, top_k=top_k)

    out = forward(params, prompt, pmask, CFG)
    cache, logits = prefill_cache(out.kv, N), out.logits[:, -1]
    key_mask = np.pad(np.asarray(pmask), ((0, 0), (0, N)))
    pos = np.asarray(model.positions_from_mask(pmask))[:, -1] + 1
    step = jax.jit(decode_step, static_argnames="cfg")
    key, toks, logps = jax.random.PRNGKey(26), [], []
    for i in range(N):
        key, sub = jax.random.split(key)
        z = logits / temperature                                            # [B, V] float32
        if top_k:
            z = jnp.where(z < jnp.sort(z, axis=-1)[:, -top_k, None], -jnp.inf, z)
        tok = np.asarray(jax.random.categorical(sub, jax.nn.log_softmax(z, axis=-1), axis=-1))
        toks.append(tok)
        logps.append(np_log_softmax(z)[np.arange(len(tok)), tok])
        key_mask[:, P + i] = 1
        logits, _, cache = step(params, jnp.asarray(tok), jnp.asarray(pos + i), P + i, cache,
                                jnp.asarray(key_mask), cfg=CFG)
    assert_layout(gen, P, N)
    resp = np.asarray(gen.response_mask)[:, P:].astype(bool)
    np.testing.assert_array_equal(np.asarray(gen.tokens)[:, P:][resp], np.stack(toks, 1)[resp])
    np.testing.assert_allclose(np.asarray(gen.logprobs)[:, P:][resp], np.stack(logps, 1)[resp],
                               atol=2e-5)


def test_decode_params_layout_gives_the_same_step():
    """decode_step on `decode_params` (per-layer blocks, W_te^T) = decode_step on the stacked
    parameters: logits, hidden state and cache."""
    params = make_params(27)
    prompt, pmask = prompt_batch()
    out = forward(params, prompt, pmask, CFG)
    cache = prefill_cache(out.kv, 3)
    mask = jnp.pad(pmask, ((0, 0), (0, 3))).at[:, 5].set(1)
    args = (jnp.array([3, 4, 5, 6]), jnp.array([5, 3, 2, 4]), 5, cache, mask)
    a = decode_step(params, *args, cfg=CFG)
    b = decode_step(decode_params(params), *args, cfg=CFG)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
