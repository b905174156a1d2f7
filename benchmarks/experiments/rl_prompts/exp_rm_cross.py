"""Each arm's RM on the SAME files: baseline valid (train prompts only), held-out, rl."""
from minirlhf.checkpoint import load_checkpoint
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward import evaluate_preferences
from minirlhf.reward_data import load_preference_data
tok = ensure_tokenizer(False)
paths = {"valid(train prompts)": "runs/baseline/valid.jsonl", "heldout": "runs/eval_prefs/heldout.jsonl", "rl": "runs/eval_prefs/rl.jsonl"}
for arm in ("baseline", "treatment", "treatment_rm1.5x"):
    rm, cfg, _ = load_checkpoint(f"runs/{arm}/reward.ckpt")
    data = load_preference_data(tok, paths, SEQ_LEN, model_max_len=cfg.max_len)
    print(arm, "  ".join(f"{s}: acc {m['accuracy']:.3f} bayes {m['bayes_rate']:.3f}" for s, d in data.items() for m in [evaluate_preferences(rm, cfg, d).metrics]))
