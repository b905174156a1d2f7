"""minirlhf: LLM alignment from scratch in functional JAX.

The data flows through the package in the order of the lessons:

    worlds/      toy worlds: the capitals world (text) and the exact world (enumerable)
    tokenizer    BPE tokenizer (HF `tokenizers`) and batch encoding with masks
    data         preference JSONL records {"prompt", "chosen", "rejected"}
    model        the tiny GPT as pure functions over a params pytree (+ scalar heads)
    sampling     KV-cache generation inside lax.scan
    checkpoint   safe (msgpack), atomic checkpoints with their config
    pretrain     stage 02: next-token pretraining on the noisy corpus
    sft          stage 03: supervised fine-tuning -> the reference policy pi_ref
    reward       stage 04: Bradley-Terry reward model
    ppo, rlhf    stage 05: PPO math (ppo) and the PPO iteration on the transformer (rlhf)
    dpo          stage 06: DPO / IPO / conservative DPO
    tabular      exact-world tabular policies: exact checks of PPO and DPO
    distributed  stage 08: the same steps over a device mesh
"""

__version__ = "0.1.0"
