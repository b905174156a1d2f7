"""GRPO / RLOO on the transformer and expert iteration (minirlhf/grpo_train.py), on a tiny random
GPT, a stand-in reward model and hand-made verifier tables; the verifier also on the real
tokenizer against worlds.capitals.gold_correct."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import expert_iteration as ei_mod
from minirlhf import grpo_train as gt
from minirlhf.model import GPTConfig, forward, init_params, init_scalar_head
from minirlhf.tokenizer import EOS_ID, decode_responses, encode_batch, encode_text
from minirlhf.worlds.capitals import CAPITAL, gold_correct

MODEL = GPTConfig(vocab_size=16, max_len=12, n_layer=1, n_head=2, d_model=16)
P_LEN, N = 4, 5
CFG = gt.GRPOConfig(estimator="grpo", reward="model", kl_in="loss", beta=0.1, group_size=4,
                    prompts_per_iteration=3, lr=1e-2, prompt_len=P_LEN, max_new_tokens=N)
# The tiny vocabulary's text: ids 3..15.  " Paris" is one token (3) or two ("Par" + "is");
# " Rome" (5) is a wrong capital for every prompt below.
PIECES = {3: " Paris", 4: " Berlin", 5: " Rome", 6: ".", 7: "Par", 8: "is", 9: " the",
          10: " city", 11: "_", 12: " a", 13: "b", 14: " ", 15: "!"}


def tiny_verifier() -> gt.Verifier:
    width = max(map(len, PIECES.values()))
    chars = np.zeros((MODEL.vocab_size, width), np.int32)
    lengths = np.zeros(MODEL.vocab_size, np.int32)
    for i, text in PIECES.items():
        chars[i, :len(text)] = [ord(c) for c in text]
        lengths[i] = len(text)
    return gt.Verifier(jnp.asarray(chars), jnp.asarray(lengths), *gt.capital_tables())


def logit_boost(wte, ids, size):
    """A final-norm bias adding about `size` to the logits of `ids` (weight tying: logit_v =
    h . wte_v, and b = size * sum_i wte_i / |wte_i|^2 adds `size` to each, plus small cross terms)."""
    rows = wte[np.array(ids)]                                        # [k, D]
    return size * jnp.sum(rows / jnp.sum(rows ** 2, axis=1, keepdims=True), axis=0)


def tiny_text(ids) -> str:
    """The decoded text of tiny-vocabulary ids up to the first eos, as decode_responses writes it."""
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        out.append(PIECES.get(int(i), ""))
    return "".join(out)


def prompt_table(answers=("Paris", "Berlin", "Paris")):
    tokens = np.array([[0, 0, 1, 5], [0, 1, 7, 3], [1, 9, 4, 6]], np.int32)
    answer = [gt.CAPITALS.index(a) for a in answers]
    return gt.PromptTable(jnp.asarray(tokens), jnp.asarray((tokens > 0).astype(np.int32)),
                          jnp.asarray(answer, dtype=jnp.int32))


@pytest.fixture(scope="module")
def models():
    k_pi, k_rm, k_head = jax.random.split(jax.random.PRNGKey(0), 3)
    ref = init_params(k_pi, MODEL)
    rm = {"backbone": init_params(k_rm, MODEL), "head": init_scalar_head(k_head, MODEL)}
    rm["head"]["w"] = rm["head"]["w"] * 50.0                        # scores of order 1
    return ref, rm


def iterate(state, ref, rm, key, cfg=CFG, beta=None):
    cfg = cfg if beta is None else dataclasses.replace(cfg, beta=beta)
    return gt.grpo_iteration(state, ref, rm, prompt_table(), tiny_verifier(), gt.recipe_of(cfg),
                             key, cfg=gt.compiled_part(cfg), model_cfg=MODEL)


@pytest.fixture(scope="module")
def one_iteration(models):
    ref, rm = models
    state = gt.init_grpo_state(ref, CFG)
    new_state, out = iterate(state, ref, rm, jax.random.PRNGKey(5))
    return state, new_state, out


# ----------------------------------------------------------------------------- written out

def logps_np(params, tokens, attn):
    """log pi(y_t | y_<t) in float64 from the model's logits, one token at a time."""
    z = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(attn), MODEL).logits, np.float64)
    out = np.zeros(tokens.shape)
    for b in range(tokens.shape[0]):
        for t in range(1, tokens.shape[1]):
            row = z[b, t - 1]
            out[b, t] = row[tokens[b, t]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
    return out


def written_out_loss(logp, old, ref, rewards, mask, G, cfg, beta):
    """GRPO's loss (Shao et al. 2024 eqs. 3-4) with loops: group-whitened advantages (population
    std), per-token -min(rho A, clip(rho) A) + beta k3, averaged over each answer's tokens, then
    over the answers.  cfg.estimator "drgrpo": A = r - mean (Liu et al. 2025); "rloo": A = r -
    mean of the other G - 1 (Ahmadian et al. 2024).  cfg.kl_in "reward": no k3 in the loss; the
    rewards are first penalised, r - beta sum_t (log pi_old - log pi_ref)."""
    B = len(rewards)
    if cfg.kl_in == "reward":
        rewards = [rewards[b] - beta * sum(old[b, t] - ref[b, t] for t in range(mask.shape[1])
                                           if mask[b, t] > 0) for b in range(B)]
    adv = np.zeros(B)
    for g in range(B // G):
        r = rewards[g * G:(g + 1) * G]
        mean = sum(r) / G
        std = (sum((x - mean) ** 2 for x in r) / G) ** 0.5
        for i in range(G):
            if cfg.estimator == "grpo":
                adv[g * G + i] = (r[i] - mean) / (std + 1e-4)
            elif cfg.estimator == "drgrpo":
                adv[g * G + i] = r[i] - mean
            else:
                adv[g * G + i] = r[i] - (sum(r) - r[i]) / (G - 1)
    k3_beta = beta if cfg.kl_in == "loss" else 0.0
    total = 0.0
    for b in range(B):
        terms = []
        for t in range(mask.shape[1]):
            if mask[b, t] == 0:
                continue
            rho = np.exp(logp[b, t] - old[b, t])
            clipped = min(max(rho, 1 - cfg.clip_eps_low), 1 + cfg.clip_eps_high)
            pg = -min(rho * adv[b], clipped * adv[b])
            q = np.exp(ref[b, t] - logp[b, t])
            terms.append(pg + k3_beta * (q - np.log(q) - 1))
        total += sum(terms) / max(len(terms), 1)
    return total / B, adv


def test_iteration_loss_equals_the_loss_written_out_from_its_own_rollout(models, one_iteration):
    """The loss the jitted iteration reports (before its update) == GRPO's loss written out in
    float64 loops from the rollout it returns: rewards from the reward model, log-probs of the
    policy (= pi_old: the update is on-policy) and of pi_ref."""
    ref, rm = models
    state, _, out = one_iteration
    tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask)
    attn = (tokens > 0).astype(np.int32) | mask.astype(np.int32)
    assert mask.sum() > 12                                           # something was sampled
    rm_hidden = np.asarray(forward(rm["backbone"], jnp.asarray(tokens), jnp.asarray(attn),
                                   MODEL).hidden, np.float64)
    last = [max(np.flatnonzero(attn[b])) for b in range(len(tokens))]
    w, b0 = np.asarray(rm["head"]["w"], np.float64), float(rm["head"]["b"])
    rewards = np.array([rm_hidden[b, last[b]] @ w + b0 for b in range(len(tokens))])
    np.testing.assert_allclose(out.rewards, rewards, rtol=1e-4, atol=1e-5)
    logp = logps_np(state.params, tokens, attn)
    ref_logp = logps_np(ref, tokens, attn)
    loss, adv = written_out_loss(logp, logp, ref_logp, rewards, mask, CFG.group_size, CFG,
                                 CFG.beta)
    np.testing.assert_allclose(out.advantages, adv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(out.metrics["loss"]), loss, rtol=1e-4, atol=1e-6)
    kl = np.mean([(logp[b] - ref_logp[b]) @ mask[b] for b in range(len(tokens))])
    np.testing.assert_allclose(float(out.metrics["kl"]), kl, atol=1e-5)   # 0: pi_theta = pi_ref


def test_loss_gradient_equals_finite_differences_of_the_written_out_loss(models, one_iteration):
    """jax.grad of the transformer-level loss (iteration_loss) along random directions == central
    differences of the float64 loop, at parameters moved off pi_old (ratios != 1, tight clip, so
    both branches of the min and the k3 term are exercised)."""
    ref, _ = models
    _, _, out = one_iteration
    with jax.enable_x64(True):
        cfg64 = dataclasses.replace(MODEL, compute_dtype="float64")
        to64 = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)
        ref64 = to64(ref)
        cfg = dataclasses.replace(CFG, clip_eps_low=0.02, clip_eps_high=0.03)
        tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask, np.float64)
        attn = ((tokens > 0) | (mask > 0)).astype(np.int32)
        old = logps_np64(ref64, tokens, attn, cfg64)                 # pi_old = pi_ref
        params = jax.tree_util.tree_map(
            lambda x, k: x + 0.05 * jax.random.normal(k, x.shape, jnp.float64), ref64,
            tree_keys(ref64, 11))
        rewards = np.asarray(out.rewards, np.float64)
        _, adv = written_out_loss(old, old, old, rewards, mask, CFG.group_size, cfg, 0.0)
        batch = {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(attn),
                 "response_mask": jnp.asarray(mask), "old_logps": jnp.asarray(old),
                 "ref_logps": jnp.asarray(logps_np64(ref64, tokens, attn, cfg64)),
                 "advantages": jnp.asarray(adv)}
        ref_logp = np.asarray(batch["ref_logps"])

        def written(p):
            return written_out_loss(logps_np64(p, tokens, attn, cfg64), old, ref_logp, rewards,
                                    mask, CFG.group_size, cfg, 0.3)[0]

        loss, grad = jax.value_and_grad(lambda p: gt.iteration_loss(p, batch, 0.3, cfg, cfg64)[0])(
            params)
        np.testing.assert_allclose(float(loss), written(params), rtol=1e-9)
        ratio = np.exp(logps_np64(params, tokens, attn, cfg64) - old)[mask > 0]
        assert np.mean(np.abs(ratio - 1) > 0.03) > 0.2              # the clip is active somewhere
        for seed in range(2):
            d = jax.tree_util.tree_map(lambda x, k: jax.random.normal(k, x.shape, jnp.float64),
                                       params, tree_keys(params, 100 + seed))
            eps = 1e-6
            fd = (written(shifted(params, d, eps)) - written(shifted(params, d, -eps))) / (2 * eps)
            analytic = sum(float(jnp.vdot(g, dx)) for g, dx in
                           zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(d)))
            np.testing.assert_allclose(analytic, fd, rtol=1e-5, atol=1e-8)


def logps_np64(params, tokens, attn, cfg):
    z = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(attn), cfg).logits)
    z = z[:, :-1]
    lse = z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))
    picked = np.take_along_axis(z, tokens[:, 1:, None], -1)[..., 0]
    return np.pad(picked - lse, ((0, 0), (1, 0)))


def shifted(params, direction, step):
    return jax.tree_util.tree_map(lambda x, dx: x + step * dx, params, direction)


def tree_keys(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(jax.random.PRNGKey(seed),
                                                                       len(leaves))))


# ----------------------------------------------------------------------------- invariants

def test_reference_is_unchanged_and_gets_no_gradient(models, one_iteration):
    ref, rm = models
    _, new_state, _ = one_iteration
    fresh = init_params(jax.random.split(jax.random.PRNGKey(0), 3)[0], MODEL)
    for a, b in zip(jax.tree_util.tree_leaves(fresh), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(a, b)
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(new_state.params), jax.tree_util.tree_leaves(ref))]
    assert max(moved) > 0                                            # the policy did move
    state = gt.init_grpo_state(ref, CFG)

    def loss_through_rollout(ref_params):
        batch, _, _, _ = gt.make_rollout(state.params, ref_params, rm, prompt_table(),
                                         tiny_verifier(), gt.recipe_of(CFG),
                                         jax.random.PRNGKey(2), cfg=CFG, model_cfg=MODEL)
        return gt.iteration_loss(state.params, batch, 0.1, CFG, MODEL)[0]

    grads = jax.jit(jax.grad(loss_through_rollout))(ref)
    for g in jax.tree_util.tree_leaves(grads):
        assert np.all(np.asarray(g) == 0.0)


def test_same_key_same_result_other_key_other_rollout(models, one_iteration):
    ref, rm = models
    state, new_state, out = one_iteration
    again_state, again = iterate(state, ref, rm, jax.random.PRNGKey(5))
    np.testing.assert_array_equal(again.tokens, out.tokens)
    for a, b in zip(jax.tree_util.tree_leaves(again_state.params),
                    jax.tree_util.tree_leaves(new_state.params)):
        np.testing.assert_array_equal(a, b)
    _, other = iterate(state, ref, rm, jax.random.PRNGKey(6))
    assert not np.array_equal(np.asarray(other.tokens), np.asarray(out.tokens))


def test_rows_come_in_groups_of_one_prompt(one_iteration):
    _, _, out = one_iteration
    idx = np.asarray(out.prompt_idx).reshape(CFG.prompts_per_iteration, CFG.group_size)
    assert np.all(idx == idx[:, :1])
    np.testing.assert_array_equal(np.sort(idx[:, 0]), [0, 1, 2])    # P = 3: each prompt once
    adv = np.asarray(out.advantages).reshape(idx.shape)
    np.testing.assert_allclose(adv.mean(1), 0.0, atol=1e-5)          # a baseline per group


def test_update_raises_the_log_prob_of_high_advantage_answers(models):
    """One on-policy step without KL: the answers with positive advantage gain log-probability,
    those with negative advantage lose it (the advantage-weighted change is positive)."""
    ref, rm = models
    cfg = dataclasses.replace(CFG, lr=1e-3)
    state = gt.init_grpo_state(ref, cfg)
    new_state, out = iterate(state, ref, rm, jax.random.PRNGKey(7), cfg=cfg, beta=0.0)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask)
    attn = ((tokens > 0) | (mask > 0)).astype(np.int32)
    before = (logps_np(state.params, tokens, attn) * mask).sum(1)
    after = (logps_np(new_state.params, tokens, attn) * mask).sum(1)
    adv, delta = np.asarray(out.advantages), after - before
    assert delta[adv > 0.5].mean() > 0 > delta[adv < -0.5].mean(), (adv, delta)
    best = int(np.argmax(adv))
    assert delta[best] > 0


def test_kl_in_reward_subtracts_the_summed_k1_before_the_baseline(models):
    """kl_in="reward" (RLOO): rewards = r_phi - beta sum_t (log pi - log pi_ref), advantages
    r_i - mean of the others.  At a policy != pi_ref the KL term is non-zero."""
    ref, rm = models
    cfg = dataclasses.replace(CFG, estimator="rloo", kl_in="reward")
    policy = jax.tree_util.tree_map(
        lambda x, k: x + 0.3 * jax.random.normal(k, x.shape), ref, tree_keys(ref, 3))
    _, out = iterate(gt.init_grpo_state(policy, cfg), ref, rm, jax.random.PRNGKey(8), cfg=cfg,
                     beta=0.5)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask)
    attn = ((tokens > 0) | (mask > 0)).astype(np.int32)
    kl = ((logps_np(policy, tokens, attn) - logps_np(ref, tokens, attn)) * mask).sum(1)
    assert np.abs(kl).max() > 0.1
    hidden = np.asarray(forward(rm["backbone"], jnp.asarray(tokens), jnp.asarray(attn),
                                MODEL).hidden, np.float64)
    last = [max(np.flatnonzero(attn[b])) for b in range(len(tokens))]
    score = np.array([hidden[b, last[b]] @ np.asarray(rm["head"]["w"]) + float(rm["head"]["b"])
                      for b in range(len(tokens))])
    rewards = score - 0.5 * kl
    np.testing.assert_allclose(out.rewards, rewards, rtol=1e-4, atol=1e-4)
    G = cfg.group_size
    for i in range(len(rewards)):
        g = i // G
        others = [rewards[j] for j in range(g * G, (g + 1) * G) if j != i]
        np.testing.assert_allclose(out.advantages[i], rewards[i] - sum(others) / (G - 1),
                                   atol=1e-4)


def test_gold_reward_is_the_verifier_on_the_decoded_text(models):
    """reward="gold" without a reward model: each answer's reward is 1 iff its text (tiny
    vocabulary) names the prompt's capital and no other, per worlds.capitals' rule."""
    ref, _ = models
    cfg = dataclasses.replace(CFG, reward="gold", beta=0.0)
    policy = jax.tree_util.tree_map(jnp.array, ref)
    policy["ln_f"]["b"] = policy["ln_f"]["b"] + logit_boost(policy["wte"], [3, 2, 4, 9], 2.0)
    _, out = iterate(gt.init_grpo_state(policy, cfg), ref, None, jax.random.PRNGKey(9), cfg=cfg)
    want = gold_rewards(out)
    np.testing.assert_array_equal(np.asarray(out.rewards), np.array(want, np.float32))
    assert 0 < np.mean(want) < 1, want                               # both outcomes occur


def gold_rewards(out, answers=("Paris", "Berlin", "Paris")):
    """worlds.capitals' rule on the decoded text of each answer of the rollout `out`."""
    tokens, mask = np.asarray(out.tokens), np.asarray(out.response_mask)
    want = []
    for b in range(len(tokens)):
        capital = answers[int(out.prompt_idx[b])]
        country = next(c for c, cap in CAPITAL.items() if cap == capital)
        want.append(gold_correct([country], [tiny_text(tokens[b][mask[b] > 0])])[0])
    return np.array(want, np.float64)


def rm_scores(rm, tokens, attn):
    """r_phi written out: the head on the backbone's float64 hidden state at the last real token."""
    hidden = np.asarray(forward(rm["backbone"], jnp.asarray(tokens), jnp.asarray(attn),
                                MODEL).hidden, np.float64)
    last = [max(np.flatnonzero(attn[b])) for b in range(len(tokens))]
    w, b0 = np.asarray(rm["head"]["w"], np.float64), float(rm["head"]["b"])
    return np.array([hidden[b, last[b]] @ w + b0 for b in range(len(tokens))])


RECIPES = [{"estimator": e, "reward": r, "kl_in": k} for e in ("grpo", "drgrpo", "rloo")
           for r in gt.REWARDS for k in ("loss", "reward")]


def test_every_recipe_shares_one_compiled_program_and_matches_the_written_out_loss(models):
    """All 12 (estimator, reward, kl_in) recipes with the reward model given: the jitted
    iteration compiles once (its cache does not grow after the first), and each recipe's
    rewards, advantages and loss == the float64 loop of its equations, from the same rollout
    (same policy and key) at a policy != pi_ref, so both KL placements are non-zero."""
    ref, rm = models
    policy = jax.tree_util.tree_map(jnp.array, ref)
    policy["ln_f"]["b"] = policy["ln_f"]["b"] + logit_boost(policy["wte"], [3, 2, 4, 9], 2.0)
    cfgs = [dataclasses.replace(CFG, beta=0.5, **fields) for fields in RECIPES]
    state = gt.init_grpo_state(policy, CFG)
    key = jax.random.PRNGKey(9)
    outs = [iterate(state, ref, rm, key, cfg=cfgs[0])[1]]
    compiled = gt.grpo_iteration._cache_size()
    outs += [iterate(state, ref, rm, key, cfg=cfg)[1] for cfg in cfgs[1:]]
    assert gt.grpo_iteration._cache_size() == compiled
    tokens, mask = np.asarray(outs[0].tokens), np.asarray(outs[0].response_mask)
    attn = ((tokens > 0) | (mask > 0)).astype(np.int32)
    logp, ref_logp = logps_np(policy, tokens, attn), logps_np(ref, tokens, attn)
    kl = ((logp - ref_logp) * mask).sum(1)
    assert np.abs(kl).max() > 0.1
    score = {"model": rm_scores(rm, tokens, attn), "gold": gold_rewards(outs[0])}
    assert 0 < np.mean(score["gold"]) < 1
    for cfg, out in zip(cfgs, outs):
        np.testing.assert_array_equal(out.tokens, tokens)             # one rollout for all
        r = score[cfg.reward]
        loss, adv = written_out_loss(logp, logp, ref_logp, r, mask, cfg.group_size, cfg, 0.5)
        want_r = r - 0.5 * kl if cfg.kl_in == "reward" else r
        np.testing.assert_allclose(out.rewards, want_r, rtol=1e-4, atol=1e-4, err_msg=str(cfg))
        np.testing.assert_allclose(out.advantages, adv, rtol=1e-4, atol=1e-4, err_msg=str(cfg))
        np.testing.assert_allclose(float(out.metrics["loss"]), loss, rtol=1e-4, atol=1e-5,
                                   err_msg=str(cfg))


# ----------------------------------------------------------------------------- the verifier

TRICKY = [" The capital of France is Paris.", " Paris", "Paris, Berlin.", " Parisian", " x_Paris",
          " Paris2", " (Paris)", " Paris-based", " Buenos Aires", " Buenos  Aires", "", " paris",
          " The capital of Argentina is Buenos Aires.", " Rome? Rome!", " Lima\nParis"]


def test_verifier_agrees_with_gold_correct_on_real_tokens(tok):
    """The in-jit verifier == gold_correct(decode_responses(...)) on hand-picked texts and on
    2000 random token strings mixing capital pieces, words, punctuation, eos and pads, with
    capitals also spelled in non-canonical token splits (one character per token)."""
    verifier = gt.make_verifier(tok, 512)
    rng = np.random.default_rng(0)
    countries = ["France", "Argentina", "Peru", "Italy"]
    # the hand-picked texts, as encoded responses
    rows = [countries[i % 4] for i in range(len(TRICKY))]
    enc = encode_batch(tok, [""] * len(TRICKY), TRICKY, max_len=24)
    check_agreement(tok, verifier, enc.tokens, enc.response_mask, rows)
    # random strings of pieces
    words = [" Paris", " Lima", " Rome", " Buenos", " Aires", " Buenos Aires", " the", " is",
             ".", ",", "_", "-", "2", "ian", " capital", " of", " France", " x", "s"]
    pieces = [encode_text(tok, w) for w in words]
    pieces += [[tok.token_to_id(c)] for c in "Paris"]                # P a r i s, one per token
    pieces += [[tok.token_to_id("\u2581")]] + [[EOS_ID], [0]]
    B, T = 2000, 16
    tokens, mask = np.zeros((B, T), np.int32), np.zeros((B, T), np.int32)
    for b in range(B):
        ids = []
        while len(ids) < T - 4:
            ids += pieces[rng.integers(len(pieces))]
        ids = ids[:T - 4]
        tokens[b, 4:4 + len(ids)] = ids
        mask[b, 4:4 + rng.integers(1, len(ids) + 1)] = 1
    check_agreement(tok, verifier, tokens, mask, [countries[b % 4] for b in range(B)])


def check_agreement(tok, verifier, tokens, mask, countries):
    dec = decode_responses(tok, tokens, mask)
    want = gold_correct(countries, dec.texts)
    answer = jnp.asarray([gt.CAPITALS.index(CAPITAL[c]) for c in countries], dtype=jnp.int32)
    got = jax.jit(gt.verifiable_reward)(verifier, jnp.asarray(tokens), jnp.asarray(mask), answer)
    bad = np.flatnonzero(np.asarray(got).astype(bool) != want)
    assert bad.size == 0, [(dec.texts[i], countries[i], want[i]) for i in bad[:5]]
    assert 0.05 < want.mean() < 0.95                                 # both outcomes occur


# ----------------------------------------------------------------------------- config, loop, EI

@pytest.mark.parametrize("field, value", [("estimator", "ppo"), ("reward", "rm"),
                                          ("kl_in", "both"), ("norm", "mean"),
                                          ("group_size", 1), ("beta", -0.1), ("n_epochs", 0)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"GRPOConfig.{field}"):
        gt.GRPOConfig(**{field: value})


def test_train_grpo_and_expert_iteration_run_on_the_real_tokenizer(tok):
    """Both loops end to end on a tiny GPT over the real vocabulary: documented history keys,
    finite values, and expert iteration raises the probability of the answer it kept."""
    model = GPTConfig(vocab_size=512, max_len=24, n_layer=1, n_head=2, d_model=64)
    params = init_params(jax.random.PRNGKey(1), model)
    # bias the final norm towards " Rome" and eos: some Italy answers are right, the rest wrong
    rome = encode_text(tok, " Rome")
    assert len(rome) == 1
    params["ln_f"]["b"] = params["ln_f"]["b"] + logit_boost(params["wte"], [rome[0], EOS_ID], 7.0)
    prompts = ["What's the capital of Italy?", "What's the capital of Spain?"]
    cfg = gt.GRPOConfig(reward="gold", n_iterations=2, prompts_per_iteration=2, group_size=2,
                        max_new_tokens=3)
    _, history = gt.train_grpo(params, params, None, model, tok, cfg, prompts, quiet=True)
    for key in ("reward", "gold/accuracy", "kl", "clipfrac", "loss", "time/iteration"):
        assert history[key].shape == (2,) and np.all(np.isfinite(history[key])), key
    np.testing.assert_array_equal(history["reward"], history["gold/accuracy"])
    ei = ei_mod.ExpertIterationConfig(rounds=2, samples_per_prompt=8, sft_steps=5, batch_size=8,
                                  lr=1e-2, max_new_tokens=3)
    new, h = ei_mod.expert_iteration(params, model, tok, ei, prompts, quiet=True)
    assert h["kept"][0] > 0 and set(h) == {"gold/accuracy", "kept", "loss", "time/round"}
    enc = gt.prompt_table(tok, prompts[:1], ei.prompt_len)

    def p_rome(p):
        logits = forward(p, enc.tokens, enc.attention_mask, model).logits[0, -1]
        return float(jax.nn.softmax(logits)[rome[0]])

    assert p_rome(new) > p_rome(params), (p_rome(new), p_rome(params), h)
