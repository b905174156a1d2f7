"""minirlhf: LLM alignment from scratch in functional JAX.

The data flows through the package in the order of the lessons:

    threefry         the hash behind jax.random, lowered on the CPU as its rounds written out
    worlds/          the capitals world (text, gold reward, simulated rater)
    exact/           the exact world (enumerable): world, tabular policies, exact PPO / DPO
                     training, GRPO's exact optimum, the comparisons of lesson 08 (compare, ood)
    config           check_fields: validation of every frozen config dataclass
    paths            where runs, figures and the lessons' flags live
    tokenizer        BPE tokenizer (HF `tokenizers`) and batch encoding with masks
    data             preference JSONL records {"prompt", "chosen", "rejected"}
    model            the tiny GPT as pure functions over a params pytree (+ scalar heads)
    fused_attention  the GPU attention path (cuDNN flash attention), chosen by GPTConfig
    sampling         KV-cache generation inside lax.scan
    evaluation       sampling answers and scoring them with the gold reward
    checkpoint       safe (msgpack), atomic checkpoints with their config
    training         optimizer, jitted train step, batches, which weights a stage may change
    pretrain         stage 02: next-token pretraining on the noisy corpus
    sft              stage 03: supervised fine-tuning -> the reference policy pi_ref
    bradley_terry    stage 04: the Bradley-Terry losses (pairs, and K-wise groups)
    reward_data      stage 04: comparisons of SFT answers, labelled by the rater
    reward           stage 04: the reward model
    ppo, ppo_train   stage 05: PPO math (ppo) and PPO on the transformer (ppo_train)
    dpo, dpo_train   stage 06: DPO / IPO / conservative DPO losses (dpo) and DPO on the transformer
    grpo, grpo_train stage 07: GRPO / Dr. GRPO / RLOO losses (grpo) and their training loop,
                     with the verifiable reward computed in the jit (verifier)
    expert_iteration stage 07: sample, keep what the verifier accepts, SFT on it (STaR)
    compare_capitals stage 08: SFT, best-of-n, PPO, GRPO, RLOO, DPO and IPO on the capitals world
    distributed      stage 10: the same steps over a device mesh
"""

__version__ = "0.1.0"

from minirlhf.threefry import use_unrolled_lowering

use_unrolled_lowering()   # the same random bits, compiled faster on the CPU (threefry.py)
