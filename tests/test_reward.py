"""Stage 04 (reward model): each behaviour checked against the math written out independently.

Tiny GPT configs built here (never the lessons' checkpoints), so each test takes seconds.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.bradley_terry import bradley_terry_loss
from minirlhf.data import read_preferences, write_preferences
from minirlhf.evaluation import MAX_NEW_TOKENS, PROMPT_LEN
from minirlhf.model import GPTConfig, forward, init_params, reward_from_hidden
from minirlhf.reward import (
    RewardConfig,
    calibration_bins,
    differ_in_correctness,
    fold_normalisation,
    gold_agreement,
    init_reward_model,
    make_reward_step,
    normalise_reward_model,
    pearson,
    reward_loss,
    score,
    score_batched,
    select_regime,
    train_groups,
)
from minirlhf.reward_data import (
    PreferenceConfig,
    build_preferences,
    collect_preferences,
    encode_groups,
    encode_preferences,
    encode_responses,
)
from minirlhf.tokenizer import EOS_ID, PAD_ID, encode_batch
from minirlhf.training import init_train_state, make_train_step
from minirlhf.worlds.capitals import gold_reward, parse_country, rater_prob, split_prompts

TINY = GPTConfig(vocab_size=32, max_len=16, n_layer=2, n_head=2, d_model=16)


def tiny_rm(seed=0, cfg=TINY):
    k_gpt, k_head = jax.random.split(jax.random.PRNGKey(seed))
    return init_reward_model(k_head, init_params(k_gpt, cfg), cfg)


def right_padded(rng, lengths, T, vocab):
    """Random right-padded rows [B, T]: token ids in [3, vocab), lengths as given."""
    tokens = np.zeros((len(lengths), T), np.int32)
    mask = np.zeros((len(lengths), T), np.int32)
    for b, n in enumerate(lengths):
        tokens[b, :n] = rng.integers(3, vocab, n)
        mask[b, :n] = 1
    return tokens, mask


def group_batch(rng, G=3, K=4, T=10):
    """G groups of K random responses; each pair i < j compared (random winner) with prob. 0.7."""
    tokens, mask = right_padded(rng, rng.integers(3, T + 1, G * K), T, TINY.vocab_size)
    wins = np.zeros((G, K, K), np.float32)
    for g in range(G):
        for i in range(K):
            for j in range(i + 1, K):
                if rng.random() < 0.7:
                    a, b = (i, j) if rng.random() < 0.5 else (j, i)
                    wins[g, a, b] = 1
    wins[0, 0, 1] = 1 - wins[0, 1, 0]                        # at least one comparison
    return {"tokens": tokens.reshape(G, K, T), "attention_mask": mask.reshape(G, K, T), "wins": wins}


# ----------------------------------------------------------------------------- frozen backbone

def test_frozen_backbone_gets_exactly_zero_gradient_and_never_moves():
    params, batch = tiny_rm(), group_batch(np.random.default_rng(0))
    grads = jax.jit(jax.grad(lambda p: reward_loss(p, batch, TINY, True)[0]))(params)
    for leaf in jax.tree_util.tree_leaves(grads["backbone"]):
        assert not np.any(np.asarray(leaf))                               # exactly 0, every entry
    assert np.abs(np.asarray(grads["head"]["w"])).max() > 0

    # through the actual training step, with weight decay on (which would shrink an unmasked
    # backbone even at zero gradient): the backbone stays bit-for-bit, the head moves
    rcfg = RewardConfig(steps_head=3, steps_full=3, weight_decay=0.1)
    optimizer, step_fn = make_reward_step("head", TINY, rcfg)
    state = init_train_state(params, optimizer)
    for _ in range(3):
        state, _ = step_fn(state, batch)
    for a, b in zip(jax.tree_util.tree_leaves(params["backbone"]),
                    jax.tree_util.tree_leaves(state.params["backbone"])):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(params["head"]["w"], state.params["head"]["w"])
    # (the "full" regime is the same step without the stop_gradient and the mask; its backward
    # pass through the transformer costs ~10 s of compilation, so it is exercised by the lesson)


# ----------------------------------------------------------------------------- where the reward is read

def test_reward_is_read_at_the_last_real_token_for_any_padding():
    rng, T = np.random.default_rng(1), 9
    params = tiny_rm(seed=1)
    lengths = [3, 9, 1, 6]
    tokens, mask = right_padded(rng, lengths, T, TINY.vocab_size)                  # right-padded
    r_right = np.asarray(score(params, tokens, mask, TINY))
    # reference: each sequence alone, no padding at all, reward = w . h[-1] + b
    for b, n in enumerate(lengths):
        h = jax.jit(forward, static_argnames="cfg")(
            params["backbone"], tokens[b:b + 1, :n], np.ones((1, n), np.int32), cfg=TINY).hidden
        want = float(h[0, -1] @ params["head"]["w"] + params["head"]["b"])
        np.testing.assert_allclose(r_right[b], want, rtol=1e-5, atol=1e-5)
    # appending more padding changes nothing
    more = (np.pad(tokens, ((0, 0), (0, 4))), np.pad(mask, ((0, 0), (0, 4))))
    np.testing.assert_allclose(score(params, *more, TINY), r_right, rtol=1e-5, atol=1e-5)
    # left padding (generation layout) and both-side padding (a generation that stopped early)
    left_tok, left_mask = np.zeros_like(tokens), np.zeros_like(mask)
    both_tok, both_mask = np.zeros((4, T + 4), np.int32), np.zeros((4, T + 4), np.int32)
    for b, n in enumerate(lengths):
        left_tok[b, T - n:], left_mask[b, T - n:] = tokens[b, :n], 1
        both_tok[b, 3:3 + n], both_mask[b, 3:3 + n] = tokens[b, :n], 1
    np.testing.assert_allclose(score(params, left_tok, left_mask, TINY), r_right, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(score(params, both_tok, both_mask, TINY), r_right, rtol=1e-5, atol=1e-5)
    # score_batched (fixed chunks, all-pad filler rows) agrees with score
    np.testing.assert_allclose(score_batched(params, tokens, mask, TINY, chunk=2), r_right,
                               rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- recovering a known reward

def linear_pair_loss(params, batch):
    """The RM loss with the transformer replaced by fixed features: hidden = f, one position."""
    feats = jnp.concatenate([batch["chosen_f"], batch["rejected_f"]])[:, None, :]     # [2B, 1, D]
    r = reward_from_hidden(params["head"], feats, jnp.ones(feats.shape[:2], jnp.int32))
    return bradley_terry_loss(*jnp.split(r, 2))


def test_bradley_terry_training_recovers_a_known_linear_reward():
    rng, D, M = np.random.default_rng(2), 8, 200
    feats = rng.normal(size=(M, D))                            # one fixed vector per "response"
    w_star = rng.normal(size=D)
    w_star *= 2.0 / np.linalg.norm(w_star)                     # r* = w*.f, spread ~2 reward units

    def rated_pairs(n):
        i, j = rng.integers(0, M, n), rng.integers(0, M, n)
        p = rater_prob(feats[i] @ w_star, feats[j] @ w_star, 1.0)       # BT rater, tau = 1
        first = rng.random(n) < p
        return np.where(first, i, j), np.where(first, j, i), p

    w_idx, l_idx, _ = rated_pairs(8000)
    arrays = {"chosen_f": feats[w_idx].astype(np.float32), "rejected_f": feats[l_idx].astype(np.float32)}
    params = {"backbone": {}, "head": {"w": jnp.zeros(D), "b": jnp.zeros(())}}
    rcfg = RewardConfig(steps_head=400, lr_head=0.05)
    optimizer = make_reward_step("head", TINY, rcfg)[0]
    step_fn = make_train_step(linear_pair_loss, optimizer)
    state, history = train_groups(step_fn, init_train_state(params, optimizer), arrays, rcfg.steps_head,
                                  128, np.random.default_rng(3))
    w = np.asarray(state.params["head"]["w"], np.float64)
    cosine = w @ w_star / (np.linalg.norm(w) * np.linalg.norm(w_star))
    assert cosine > 0.98, cosine
    assert 0.7 < np.linalg.norm(w) / np.linalg.norm(w_star) < 1.3   # BT also recovers the scale 1/tau
    # on fresh pairs: the rater's expected agreement with the learned ranking vs the Bayes rate
    i, j = rng.integers(0, M, 20000), rng.integers(0, M, 20000)
    p = rater_prob(feats[i] @ w_star, feats[j] @ w_star, 1.0)           # P(rater picks i)
    expected_acc = np.mean(np.where(feats[i] @ w > feats[j] @ w, p, 1 - p))
    bayes = np.mean(np.maximum(p, 1 - p))
    assert bayes - 0.01 <= expected_acc <= bayes + 1e-12, (expected_acc, bayes)
    assert history["loss"][-50:].mean() < history["loss"][:10].mean()


# ----------------------------------------------------------------------------- normalisation

def test_fold_normalisation_gives_mean_zero_std_one_and_keeps_orderings():
    rng = np.random.default_rng(4)
    params = tiny_rm(seed=4)
    params["head"]["b"] = jnp.asarray(0.7)
    tokens, mask = right_padded(rng, rng.integers(2, 11, 40), 10, TINY.vocab_size)
    before = np.asarray(score(params, tokens, mask, TINY), np.float64)
    normed, stats = normalise_reward_model(params, before)
    after = np.asarray(score(normed, tokens, mask, TINY), np.float64)
    np.testing.assert_allclose([after.mean(), after.std()], [0.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(after, (before - stats["mean"]) / stats["std"], rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.sign(before[:, None] - before[None]), np.sign(after[:, None] - after[None]))
    head = fold_normalisation({"w": jnp.array([2.0, -4.0]), "b": jnp.asarray(3.0)}, mean=1.0, std=2.0)
    np.testing.assert_allclose(head["w"], [1.0, -2.0])
    np.testing.assert_allclose(head["b"], 1.0)
    with pytest.raises(ValueError, match="std"):
        fold_normalisation(head, 0.0, 0.0)


# ----------------------------------------------------------------------------- data

GEN_CFG = GPTConfig(vocab_size=512, max_len=PROMPT_LEN + MAX_NEW_TOKENS, n_layer=1, n_head=2, d_model=16)


def test_collected_preferences_round_trip_and_match_the_rater(tok, tmp_path):
    params = init_params(jax.random.PRNGKey(5), GEN_CFG)
    prompts = split_prompts("train")[:3]
    records, skipped = collect_preferences(params, GEN_CFG, tok, prompts, "train", jax.random.PRNGKey(6),
                                           np.random.default_rng(7), n_groups=4, tau=0.5)
    assert len(records) + skipped == 12 and len(records) > 0
    for r in records:
        country = parse_country(r["prompt"])
        g_w = gold_reward(country, r["chosen"], r["chosen_ended"])
        g_l = gold_reward(country, r["rejected"], r["rejected_ended"])
        assert (r["chosen_gold_reward"], r["rejected_gold_reward"]) == (g_w, g_l)
        np.testing.assert_allclose(r["p_chosen"], rater_prob(g_w, g_l, 0.5))
        assert r["split"] == "train" and (r["chosen"], r["chosen_ended"]) != (r["rejected"], r["rejected_ended"])
    path = write_preferences(tmp_path / "prefs.jsonl", records)
    assert read_preferences(path) == records
    # a greedy policy gives two identical responses: every pair is skipped
    greedy, n_skip = collect_preferences(params, GEN_CFG, tok, prompts, "train", jax.random.PRNGKey(6),
                                         np.random.default_rng(7), n_groups=2, tau=0.5, temperature=0.0)
    assert greedy == [] and n_skip == 6


def test_build_preferences_adds_a_validation_file_of_fresh_pairs_on_the_train_prompts(tok, tmp_path):
    params = init_params(jax.random.PRNGKey(5), GEN_CFG)
    paths = {s: tmp_path / f"{s}.jsonl" for s in ("train", "valid", "heldout", "ood")}
    build_preferences(params, GEN_CFG, tok, PreferenceConfig(groups_per_prompt=1, responses_per_group=3,
                                                               eval_pairs_per_prompt=2),
                      paths, quiet=True)
    recs = {s: read_preferences(p) for s, p in paths.items()}
    for split, prompt_split in (("train", "train"), ("valid", "train"), ("heldout", "heldout"), ("ood", "ood")):
        assert {r["prompt"] for r in recs[split]} <= set(split_prompts(prompt_split))
        assert all(r["split"] == split for r in recs[split])
    # valid asks the same 32 prompts as train, with fewer, fresh samples (another key)
    assert {r["prompt"] for r in recs["valid"]} == {r["prompt"] for r in recs["train"]}
    assert len(recs["train"]) > len(recs["valid"])
    as_pair = lambda r: (r["prompt"], r["chosen"], r["rejected"])
    assert [as_pair(r) for r in recs["valid"]] != [as_pair(r) for r in recs["train"]][:len(recs["valid"])]


def test_select_regime_uses_only_the_validation_loss():
    def metrics(valid_loss, heldout_agreement):
        split = {"loss": 0.5, "gold_agreement": heldout_agreement}
        return {"train": split, "valid": {"loss": valid_loss, "gold_agreement": 0.5},
                "heldout": split, "ood": split}
    assert select_regime({"head": metrics(0.6, 0.9), "full": metrics(0.4, 0.1)}) == "full"
    assert select_regime({"head": metrics(0.4, 0.1), "full": metrics(0.6, 0.9)}) == "head"


def test_unfinished_responses_are_encoded_without_eos(tok):
    prompts = ["What's the capital of France?"] * 2
    answer = " The capital of France is Paris."
    enc = encode_responses(tok, prompts, [answer, answer], [True, False], max_len=24)
    ref = encode_batch(tok, prompts, [answer, answer], max_len=24)
    n = int(ref.attention_mask[0].sum())
    assert ref.tokens[0, n - 1] == EOS_ID
    for a, b in zip(enc, ref):                                  # ended row: exactly encode_batch
        np.testing.assert_array_equal(a[0], b[0])
    assert EOS_ID not in enc.tokens[1] and enc.tokens[1, n - 1] == PAD_ID
    np.testing.assert_array_equal(enc.tokens[1, :n - 1], ref.tokens[1, :n - 1])
    assert enc.attention_mask[1].sum() == n - 1 and enc.response_mask[1].sum() == ref.response_mask[1].sum() - 1
    # through the record path too, and gold rewards are recomputed for a file without them
    data = encode_preferences(tok, [{"prompt": prompts[0], "chosen": answer, "rejected": answer,
                                     "chosen_ended": True, "rejected_ended": False}], max_len=24)
    assert EOS_ID in data.chosen_tokens[0] and EOS_ID not in data.rejected_tokens[0]
    np.testing.assert_allclose([data.chosen_gold[0], data.rejected_gold[0]], [1.5, 0.5])
    assert np.isnan(data.p_chosen[0])


# ----------------------------------------------------------------------------- metrics

def test_gold_agreement_pearson_and_calibration_match_brute_force():
    rng = np.random.default_rng(8)
    r_w, r_l = rng.normal(size=50), rng.normal(size=50)
    g_w, g_l = rng.integers(0, 3, 50).astype(float), rng.integers(0, 3, 50).astype(float)
    kept = [(a - b > 0) == (c - d > 0) for a, b, c, d in zip(r_w, r_l, g_w, g_l) if c != d]
    assert gold_agreement(r_w, r_l, g_w, g_l) == pytest.approx(sum(kept) / len(kept))
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    p = rng.uniform(size=50)
    cal = calibration_bins(r_w, r_l, p, n_bins=4)
    q = 1 / (1 + np.exp(-(r_w - r_l)))
    for k in range(4):
        lo, hi = k / 4, (k + 1) / 4
        pts = [(qq, 1.0, pp) for qq, pp in zip(q, p) if lo <= qq < hi or (k == 3 and qq == 1)]
        pts += [(1 - qq, 0.0, 1 - pp) for qq, pp in zip(q, p) if lo <= 1 - qq < hi]
        assert cal["count"][k] == len(pts)
        if pts:
            np.testing.assert_allclose([cal["predicted"][k], cal["empirical"][k], cal["rater_p"][k]],
                                       np.mean(pts, axis=0))


def test_differ_in_correctness_marks_pairs_where_exactly_one_answer_is_right():
    q = "What's the capital of France?"
    records = [
        {"prompt": q, "chosen": " The capital of France is Paris.", "rejected": " The capital of France is Berlin."},
        {"prompt": q, "chosen": " It is Berlin.", "rejected": " The capital of France is Paris."},   # rater erred
        {"prompt": q, "chosen": " The capital of France is Paris.", "rejected": " Paris. I had rice for lunch."},
        {"prompt": q, "chosen": " Rome.", "rejected": " The capital of France is Berlin."},         # both wrong
        {"prompt": q, "chosen": " Paris, not Berlin.", "rejected": " I do not know."},              # both wrong
        {"prompt": "Tell me a joke.", "chosen": " Paris.", "rejected": " Berlin."},                  # not capitals
        {"prompt": "Which city is the capital of Nepal?", "chosen": " Kathmandu.", "rejected": " Beijing."},
    ]
    np.testing.assert_array_equal(differ_in_correctness(records),
                                  [True, True, False, False, False, False, True])


# ----------------------------------------------------------------------------- K-wise groups

def test_reward_loss_on_groups_is_the_loop_over_comparisons_scored_one_by_one():
    params, batch = tiny_rm(seed=9), group_batch(np.random.default_rng(9), G=3, K=4)
    loss, metrics = reward_loss(params, batch, TINY, False)
    per_group, margins = [], []
    for g in range(3):
        r = np.asarray(score(params, batch["tokens"][g], batch["attention_mask"][g], TINY), np.float64)
        terms = [(r[i] - r[j]) for i in range(4) for j in range(4) if batch["wins"][g, i, j]]
        margins += terms
        if terms:                          # -1/|C_g| sum log sigmoid(r_w - r_l)  (InstructGPT eq. 1)
            per_group.append(np.mean([np.log1p(np.exp(-m)) for m in terms]))
    np.testing.assert_allclose(loss, np.mean(per_group), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(np.array(margins) > 0), rtol=1e-6)


def test_encode_groups_rebuilds_groups_from_records(tok):
    q1, q2 = "What's the capital of France?", "What's the capital of Spain?"
    paris, berlin, rome = " The capital of France is Paris.", " The capital of France is Berlin.", " Rome."
    records = [
        {"prompt": q1, "chosen": paris, "rejected": berlin, "group": 0},
        {"prompt": q1, "chosen": paris, "rejected": rome, "group": 0},
        {"prompt": q1, "chosen": rome, "rejected": berlin, "group": 0},
        {"prompt": q1, "chosen": paris, "rejected": paris, "rejected_ended": False, "group": 0},
        {"prompt": q2, "chosen": " Madrid.", "rejected": " Rome."},                   # no group: its own
    ]
    g = encode_groups(tok, records, max_len=24)
    assert g.tokens.shape == (2, 4, 24) and g.wins.shape == (2, 4, 4)
    # group 0: responses in order of appearance paris, berlin, rome, paris-unfinished
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[0, 2] = expected[2, 1] = expected[0, 3] = 1
    np.testing.assert_array_equal(g.wins[0], expected)
    assert g.attention_mask[0, 3].sum() == g.attention_mask[0, 0].sum() - 1      # unfinished: no eos
    # the pair-only group: 2 responses, padded to K = 4 by repeating the first with no comparison
    np.testing.assert_array_equal(g.wins[1], np.pad([[0, 1], [0, 0]], ((0, 2), (0, 2))))
    np.testing.assert_array_equal(g.tokens[1, 2], g.tokens[1, 0])
    # the padding changes no loss: group 1 alone (K = 2) gives the same
    cfg = GPTConfig(vocab_size=512, max_len=24, n_layer=1, n_head=2, d_model=16)
    params = tiny_rm(seed=10, cfg=cfg)
    alone = encode_groups(tok, records[4:], max_len=24)
    as_batch = lambda x, sl: {"tokens": x.tokens[sl], "attention_mask": x.attention_mask[sl], "wins": x.wins[sl]}
    np.testing.assert_allclose(reward_loss(params, as_batch(g, slice(1, 2)), cfg, False)[0],
                               reward_loss(params, as_batch(alone, slice(0, 1)), cfg, False)[0], rtol=1e-6)
    bad = records[:1] + [{**records[1], "prompt": q2}]
    with pytest.raises(ValueError, match=r"prefs.jsonl line 2: group 0 asks .*Spain.*\(line 1\)"):
        encode_groups(tok, bad, max_len=24, source="prefs.jsonl")


def test_collected_groups_compare_every_pair_of_distinct_responses(tok):
    params = init_params(jax.random.PRNGKey(11), GEN_CFG)
    prompts = split_prompts("train")[:2]
    records, skipped = collect_preferences(params, GEN_CFG, tok, prompts, "train", jax.random.PRNGKey(12),
                                           np.random.default_rng(13), n_groups=3, tau=0.5, group_size=4)
    assert len(records) + skipped == 2 * 3 * 6                      # C(4, 2) comparisons per group
    by_group = {}
    for r in records:
        by_group.setdefault(r["group"], []).append(r)
    assert set(by_group) <= set(range(6))
    for recs in by_group.values():
        assert len({r["prompt"] for r in recs}) == 1
        pairs = [frozenset([(r["chosen"], r["chosen_ended"]), (r["rejected"], r["rejected_ended"])]) for r in recs]
        assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs)
    g = encode_groups(tok, records, max_len=PROMPT_LEN + MAX_NEW_TOKENS)
    assert g.tokens.shape[1] <= 4 and g.wins.sum() == len(records)
