"""Scratch experiment: reward-model regimes between "head" and "full".

    python exp_rm_regimes.py run REGIME [REGIME ...]    head | full | top1 | top2 | l2sp:LAMBDA
    python exp_rm_regimes.py table                      all results so far
    python exp_rm_regimes.py ppo REGIME [--seeds 0 1 2] PPO-ptx with that RM (normalised)

Every regime except "head" uses the "full" regime's optimizer (AdamW lr 3e-4, 200 steps, warmup 5,
cosine), the same head init (PRNGKey(seed) split as in lesson 04) and the SAME batch order
(rng [seed, 1], the full regime's).  Results -> runs/exp_results/REGIME.json, params -> .ckpt.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minirlhf import reward as rm
from minirlhf.checkpoint import load_checkpoint, save_checkpoint
from minirlhf.paths import runs_dir
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward_data import ensure_preferences, load_preference_data
from minirlhf.sft import ensure_sft_model
from minirlhf.training import batches, init_train_state, make_optimizer, make_train_step

RCFG = rm.RewardConfig()
OUT = runs_dir(False) / "exp_results"
OUT.mkdir(parents=True, exist_ok=True)
EVAL_EVERY = 25


def setup():
    tok = ensure_tokenizer(False)
    sft, cfg = ensure_sft_model(False)
    data = load_preference_data(tok, ensure_preferences(False), SEQ_LEN, model_max_len=cfg.max_len)
    k_head, k_ref = jax.random.split(jax.random.PRNGKey(RCFG.seed))
    init = rm.init_reward_model(k_head, sft, cfg)
    return tok, sft, cfg, data, init, k_ref


def sq_dist(a, b) -> jax.Array:
    return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def layer_mask(params: dict, n_top: int, L: int) -> dict:
    """1 where trainable: head, ln_f, the last n_top blocks' slices; 0 elsewhere (wte, wpe, lower blocks)."""
    bb = params["backbone"]
    layer = (jnp.arange(L) >= L - n_top).astype(jnp.float32)
    blocks = jax.tree.map(lambda x: layer.reshape((L,) + (1,) * (x.ndim - 1)) * jnp.ones_like(x), bb["blocks"])
    backbone = {k: (blocks if k == "blocks" else jax.tree.map(
        (jnp.ones_like if k == "ln_f" else jnp.zeros_like), v)) for k, v in bb.items()}
    return {"backbone": backbone, "head": jax.tree.map(jnp.ones_like, params["head"])}


def mask_grads(mask) -> optax.GradientTransformation:
    """Multiply the gradients by `mask` BEFORE clipping and AdamW: masked entries get zero grad,
    zero Adam moments, zero update (weight_decay is 0)."""
    return optax.stateless(lambda updates, params=None: jax.tree.map(jnp.multiply, updates, mask))


def build(regime: str, cfg, init):
    """(optimizer, loss_fn, steps, rng index) of a regime."""
    if regime == "head":
        return (rm.reward_optimizer("head", RCFG), partial(rm.reward_loss, cfg=cfg, freeze_backbone=True),
                RCFG.steps_head, 0)
    lr = RCFG.lr_full
    if "@" in regime:                      # e.g. top1@1e-3: same regime, another peak lr
        regime, lr = regime.split("@")[0], float(regime.split("@")[1])
    opt = make_optimizer(lr, RCFG.steps_full, warmup_steps=5, weight_decay=RCFG.weight_decay)
    bt = partial(rm.reward_loss, cfg=cfg, freeze_backbone=False)
    if regime == "full":
        return opt, bt, RCFG.steps_full, 1
    if regime.startswith("top"):
        mask = layer_mask(init, int(regime[3:]), cfg.n_layer)
        return optax.chain(mask_grads(mask), opt), bt, RCFG.steps_full, 1
    if regime.startswith("l2sp:"):
        lam = float(regime.split(":")[1])
        theta0 = init["backbone"]

        def loss_fn(params, batch):
            loss, metrics = bt(params, batch)
            pen = sq_dist(params["backbone"], theta0)
            return loss + lam * pen, {**metrics, "bt_loss": loss, "l2sp_sqdist": pen}
        return opt, loss_fn, RCFG.steps_full, 1
    raise ValueError(regime)


def split_metrics(params, cfg, data) -> dict:
    return {s: rm.evaluate_preferences(params, cfg, d).metrics for s, d in data.items()}


def run(regime: str):
    tok, sft, cfg, data, init, k_ref = setup()
    optimizer, loss_fn, steps, rng_idx = build(regime, cfg, init)
    step_fn = make_train_step(loss_fn, optimizer)
    state = init_train_state(init, optimizer)
    arrays = rm.pair_arrays(data["train"])
    rng = np.random.default_rng([RCFG.seed, rng_idx])
    curve, t_train, t_eval = [], 0.0, 0.0
    do_curve = regime != "head"

    def evaluate(i, params):
        ev = {s: rm.evaluate_preferences(params, cfg, data[s]).metrics for s in ("valid", "heldout")}
        curve.append({"step": i, "valid_acc": ev["valid"]["accuracy"], "valid_loss": ev["valid"]["loss"],
                      "heldout_acc": ev["heldout"]["accuracy"], "heldout_loss": ev["heldout"]["loss"],
                      "sqdist": float(sq_dist(params["backbone"], init["backbone"]))})
        print(f"  [{regime}] step {i:3d}  valid acc {curve[-1]['valid_acc']:.3f} loss {curve[-1]['valid_loss']:.3f}"
              f"  heldout acc {curve[-1]['heldout_acc']:.3f}  ||d||^2 {curve[-1]['sqdist']:.3g}", flush=True)

    if do_curve:
        t0 = time.time(); evaluate(0, state.params); t_eval += time.time() - t0
    for i, batch in enumerate(batches(rng, arrays, RCFG.batch_size, steps), 1):
        t0 = time.time()
        state, m = step_fn(state, batch)
        jax.block_until_ready(state.params)
        t_train += time.time() - t0
        if i % 50 == 0 or i == steps:
            extra = "".join(f"  {k} {float(m[k]):.4g}" for k in ("bt_loss", "l2sp_sqdist") if k in m)
            print(f"  [{regime}] step {i} loss {float(m['loss']):.4f}{extra}", flush=True)
        if do_curve and (i % EVAL_EVERY == 0):
            t0 = time.time(); evaluate(i, state.params); t_eval += time.time() - t0
    params = state.params
    metrics = split_metrics(params, cfg, data)
    canon = {s: rm.canonical_ranking(params, cfg, tok, s)["accuracy"] for s in data}
    fit = {}
    from minirlhf.data import read_preferences
    paths = ensure_preferences(False)
    for s in ("valid", "heldout"):
        ev, d = rm.evaluate_preferences(params, cfg, data[s]), data[s]
        one = rm.differ_in_correctness(read_preferences(paths[s]))
        fit[s] = rm.gold_agreement(ev.chosen_rewards[one], ev.rejected_rewards[one],
                                   d.chosen_gold[one], d.rejected_gold[one])
    res = {"regime": regime, "steps": steps, "train_time_s": t_train, "eval_time_s": t_eval,
           "metrics": metrics, "canonical": canon, "gold_agree_one_right": fit, "curve": curve,
           "sqdist_final": float(sq_dist(params["backbone"], init["backbone"]))}
    (OUT / f"{regime.replace(':', '_').replace('@', '_lr')}.json").write_text(json.dumps(res, indent=1))
    save_checkpoint(OUT / f"{regime.replace(':', '_').replace('@', '_lr')}.ckpt", params, cfg, {"regime": regime})
    print(f"[{regime}] train {t_train:.1f}s (+eval {t_eval:.1f}s)  " + "  ".join(
        f"{s}: acc {m['accuracy']:.3f}/{m['bayes_rate']:.3f} loss {m['loss']:.3f} gold {m['gold_agreement']:.3f}"
        for s, m in metrics.items()), flush=True)


def table():
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    base = ["head", "top1", "top1@1e-3", "top2", "top2@1e-3", "full"]
    order = lambda r: (base.index(r["regime"]) if not r["regime"].startswith("l2sp")
                       else 10 + float(r["regime"][5:]))
    rows.sort(key=order)
    pick = min(rows, key=lambda r: r["metrics"]["valid"]["loss"])["regime"]
    print(f"{'regime':<12}{'train acc':>10}{'valid acc/Bayes':>17}{'valid BT':>9}{'heldout acc/Bayes':>19}"
          f"{'OOD acc/Bayes':>15}{'gold ho':>8}{'gold ho 1R':>11}{'canon ho':>9}{'||d||^2':>9}{'time s':>8}")
    for r in rows:
        m = r["metrics"]
        f = lambda s: f"{m[s]['accuracy']:.3f}/{m[s]['bayes_rate']:.3f}"
        print(f"{r['regime'] + (' *' if r['regime'] == pick else ''):<12}{m['train']['accuracy']:>10.3f}{f('valid'):>17}"
              f"{m['valid']['loss']:>9.3f}{f('heldout'):>19}{f('ood'):>15}{m['heldout']['gold_agreement']:>8.3f}"
              f"{r['gold_agree_one_right']['heldout']:>11.3f}{r['canonical']['heldout']:>9.3f}"
              f"{r['sqdist_final']:>9.3g}{r['train_time_s']:>8.1f}")
    print(f"* = select_regime's rule (lowest valid BT loss) among these: {pick}")
    for r in rows:
        if r["curve"]:
            print(f"\ncurve {r['regime']}: step  valid_acc  valid_loss  heldout_acc  heldout_loss  ||d||^2")
            for c in r["curve"]:
                print(f"   {c['step']:4d}  {c['valid_acc']:.3f}  {c['valid_loss']:.3f}  {c['heldout_acc']:.3f}"
                      f"  {c['heldout_loss']:.3f}  {c['sqdist']:.3g}")


def ppo(regime: str, seeds):
    import dataclasses
    from minirlhf import rlhf
    from minirlhf.evaluation import evaluate_splits
    from minirlhf.worlds.capitals import split_prompts
    tok, sft, cfg, data, init, k_ref = setup()
    params, _, _ = load_checkpoint(OUT / f"{regime.replace(':', '_').replace('@', '_lr')}.ckpt")
    ref = rm.reference_rewards(params, cfg, tok, sft, k_ref, RCFG.n_reference_per_prompt)
    rm_params, stats = rm.normalise_reward_model(params, ref)
    splits = {s: split_prompts(s) for s in ("train", "heldout")}
    key = jax.random.PRNGKey(1234)
    acc = lambda p: tuple(evaluate_splits(p, cfg, tok, splits, key, 64)[s]["gold/accuracy"] for s in splits)
    rows = [acc(sft)]
    print(f"SFT train/heldout {rows[0]}", flush=True)
    out = []
    for seed in seeds:
        pcfg = dataclasses.replace(rlhf.PPOConfig(), seed=seed, ptx_coef=1.0)
        state, _ = rlhf.train_ppo(sft, sft, rm_params, cfg, tok, pcfg, quiet=True)
        out.append(acc(state.train_state.params["policy"]))
        print(f"seed {seed}: PPO-ptx train/heldout {out[-1]}", flush=True)
    a = np.array(out)
    print(f"PPO-ptx ({regime} RM): train {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f}  "
          f"heldout {a[:, 1].mean():.3f} ± {a[:, 1].std():.3f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "run":
        for g in sys.argv[2:]:
            run(g)
    elif cmd == "table":
        table()
    elif cmd == "ppo":
        seeds = [int(s) for s in sys.argv[sys.argv.index("--seeds") + 1:]] if "--seeds" in sys.argv else [0, 1, 2]
        ppo(sys.argv[2], seeds)
