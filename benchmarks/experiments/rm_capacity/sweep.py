"""Scratch sweep of the reward model's full fine-tuning on lesson 04's K-wise train groups:
valid accuracy / loss / gold agreement (and held-out accuracy) per RewardConfig override.
    python benchmarks/experiments/rm_capacity/sweep.py '[{"lr_full": 1e-3, "seed": 1}, ...]'"""
import dataclasses, json, sys, time
import jax
from minirlhf import reward as rm
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward_data import ensure_preferences, load_groups, load_preference_data
from minirlhf.sft import ensure_sft_model
tok = ensure_tokenizer(False)
sft, cfg = ensure_sft_model(False)
paths = ensure_preferences(False)
data = load_preference_data(tok, paths, SEQ_LEN, model_max_len=cfg.max_len)
groups = load_groups(tok, paths["train"])
for g in json.loads(sys.argv[1]):
    rcfg = dataclasses.replace(rm.RewardConfig(), **{k: v for k, v in g.items() if k != "regime"})
    init = rm.init_reward_model(jax.random.split(jax.random.PRNGKey(rcfg.seed))[0], sft, cfg)
    t0 = time.time()
    params, h = rm.train_reward_model(init, groups, cfg, rcfg, g.get("regime", "full"), quiet=True,
                                      eval_data=data["valid"])
    m = {s: rm.evaluate_preferences(params, cfg, data[s]).metrics for s in ("valid", "heldout")}
    print(json.dumps(g), f"t={time.time() - t0:.0f}s valid acc %.3f loss %.3f gold %.3f | heldout acc %.3f" % (
        m["valid"]["accuracy"], m["valid"]["loss"], m["valid"]["gold_agreement"], m["heldout"]["accuracy"]),
        "curve", [f"{s}:{a:.3f}/{l:.3f}" for s, a, l in zip(h["eval_step"], h["eval_accuracy"], h["eval_loss"])],
        flush=True)
