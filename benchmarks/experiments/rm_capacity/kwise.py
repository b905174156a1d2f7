"""Scratch: InstructGPT's K-wise comparisons (all C(K,2) pairs of K responses per prompt,
trained as one batch element) vs the same comparisons as independent pairs vs lesson 04's pairs."""
import itertools, json, sys, time
from functools import partial
import jax, jax.numpy as jnp, numpy as np
from minirlhf import reward as rm
from minirlhf.evaluation import sample_answers
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward_data import ensure_preferences, load_preference_data, encode_responses
from minirlhf.sft import ensure_sft_model
from minirlhf.training import make_optimizer, make_train_step, init_train_state
from minirlhf.worlds.capitals import split_prompts, rater_prob, CapitalsConfig
tok = ensure_tokenizer(False)
sft, cfg = ensure_sft_model(False)
data = load_preference_data(tok, ensure_preferences(False), SEQ_LEN, model_max_len=cfg.max_len)
T = data["train"].chosen_tokens.shape[1]
tau = CapitalsConfig().rater_tau

def collect(K, n_groups, seed):
    prompts = split_prompts("train")
    s = sample_answers(sft, cfg, tok, prompts, jax.random.PRNGKey(100 + seed), n=K * n_groups)
    enc = encode_responses(tok, s.prompts, s.texts, s.ended, T)
    G = len(prompts) * n_groups
    toks = enc.tokens.reshape(G, K, T); mask = enc.attention_mask.reshape(G, K, T)
    gold = s.gold_reward.reshape(G, K)
    texts = np.array([f"{t}|{e}" for t, e in zip(s.texts, s.ended)]).reshape(G, K)
    rng = np.random.default_rng(seed)
    wins = np.zeros((G, K, K), np.float32)
    for g in range(G):
        for i, j in itertools.combinations(range(K), 2):
            if texts[g, i] == texts[g, j]:
                continue
            p = rater_prob(gold[g, i], gold[g, j], tau)
            if rng.random() < p: wins[g, i, j] = 1
            else: wins[g, j, i] = 1
    return {"tokens": toks, "mask": mask, "wins": wins}

def to_pairs(gd):
    """The same comparisons as independent pairs: groups of K = 2, shuffled on their own."""
    g, i, j = np.nonzero(gd["wins"])
    wins = np.zeros((len(g), 2, 2), np.float32)
    wins[:, 0, 1] = 1
    return {"tokens": np.stack([gd["tokens"][g, i], gd["tokens"][g, j]], 1),
            "attention_mask": np.stack([gd["mask"][g, i], gd["mask"][g, j]], 1), "wins": wins}


def run(spec, gd):
    lr, steps, mode, bs, seed = spec["lr"], spec["steps"], spec["mode"], spec["bs"], spec.get("seed", 0)
    init = rm.init_reward_model(jax.random.PRNGKey(seed), sft, cfg)
    opt = make_optimizer(lr, steps, warmup_steps=5)
    step = make_train_step(partial(rm.reward_loss, cfg=cfg, freeze_backbone=False), opt)
    arrays = ({"tokens": gd["tokens"], "attention_mask": gd["mask"], "wins": gd["wins"]} if mode == "group"
              else to_pairs(gd))
    from minirlhf.training import batches
    state = init_train_state(init, opt)
    t0 = time.time(); curve = []
    for i, b in enumerate(batches(np.random.default_rng(seed), arrays, bs, steps), 1):
        state, m = step(state, b)
        if i % max(steps // 4, 1) == 0:
            ev = rm.evaluate_preferences(state.params, cfg, data["valid"]).metrics
            curve.append(f"{i}:{ev['accuracy']:.3f}/{ev['loss']:.3f}")
    m = {s: rm.evaluate_preferences(state.params, cfg, data[s]).metrics for s in ("valid", "heldout")}
    print(json.dumps(spec), f"t={time.time() - t0:.0f}s valid acc {m['valid']['accuracy']:.3f} loss {m['valid']['loss']:.3f} "
          f"gold {m['valid']['gold_agreement']:.3f} bayes {m['valid']['bayes_rate']:.3f} | heldout {m['heldout']['accuracy']:.3f}", curve, flush=True)

specs = json.loads(sys.argv[1])
cache = {}
for spec in specs:
    key = (spec["K"], spec["n_groups"], spec.get("data_seed", 0))
    if key not in cache:
        t0 = time.time(); cache[key] = collect(*key)
        print(f"collected K={key[0]} groups/prompt={key[1]}: {int(cache[key]['wins'].sum())} comparisons in {time.time()-t0:.0f}s", flush=True)
    run(spec, cache[key])
