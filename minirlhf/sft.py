"""Stage 03: supervised fine-tuning on the Q/A demonstrations -> the reference policy pi_ref.

    L_SFT(theta) = - (1/N) sum_(x, y) in D_demo  sum_{t in y} log pi_theta(y_t | x, y_<t)

The loss is masked to the response tokens (the final eos included): the model is not asked to
predict the question, only the answer to it, and learns to stop.

Replay.  Fine-tuning on demonstrations for 32 countries alone teaches the answer format but
also overwrites what the base model knew about the other countries: a tiny model asked about
Portugal answers "The capital of Peru is Lima." (lesson 03 measures it).  Mixing pretraining
documents into the SFT batches (their loss on every token, as in pretraining) keeps that
knowledge; it is the same idea as InstructGPT's "PPO-ptx" pretraining-gradient mix (Ouyang et
al. 2022, eq. 2), applied to SFT.  `SFTConfig.replay` switches it.  The resulting checkpoint is
pi_ref of lessons 04-07 (the anchor of the KL penalty in PPO and of the log-ratios in DPO).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tokenizers import Tokenizer

from minirlhf.checkpoint import ensure_checkpoint, save_checkpoint
from minirlhf.config import check_fields
from minirlhf.paths import artifact_path, file_digest, recipe
from minirlhf.pretrain import (
    SEQ_LEN,
    base_model_path,
    corpus_arrays,
    ensure_base_model,
    ensure_tokenizer,
    train_lm,
)
from minirlhf.tokenizer import encode_batch
from minirlhf.worlds.capitals import CapitalsConfig, make_sft_demos


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Fine-tuning run on the demonstrations."""

    steps: int = 150
    """Optimizer steps (about one pass over the replay mixture at batch 32)."""
    replay: bool = True
    """Mix the pretraining corpus into the SFT data (see the module docstring)."""
    demo_repeats: int = 6
    """With replay: each demonstration appears this many times in the mixture (6 x 256 demos
    next to 3000 corpus documents: about a third of the rows are demonstrations)."""
    batch_size: int = 32
    """Demonstrations per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    seed: int = 0
    """Seeds the batch order."""

    def __post_init__(self):
        check_fields(self, counts=("steps", "demo_repeats", "batch_size"), positive=("lr",),
                     non_negative=("weight_decay",), naturals=("seed",))

    @classmethod
    def smoke(cls) -> SFTConfig:
        """A tiny run (10 steps of 16 rows) for the --smoke lessons and the tests."""
        return cls(steps=10, batch_size=16)


def demo_arrays(tok: Tokenizer, prompts, responses) -> dict:
    """(prompt, response) pairs -> {tokens, attention_mask, loss_mask = response_mask} [N, SEQ_LEN]."""
    enc = encode_batch(tok, prompts, responses, max_len=SEQ_LEN)
    return {"tokens": enc.tokens, "attention_mask": enc.attention_mask, "loss_mask": enc.response_mask}


def sft(params, model_cfg, tok: Tokenizer, cfg: SFTConfig, world: CapitalsConfig = CapitalsConfig(),
        quiet: bool = False):
    """Fine-tune `params` on the capitals demonstrations -> (params, loss history)."""
    demos = make_sft_demos(world)
    arrays = demo_arrays(tok, [d.prompt for d in demos], [d.response for d in demos])
    if cfg.replay:
        corpus = corpus_arrays(tok, world)
        arrays = {k: np.concatenate([np.tile(arrays[k], (cfg.demo_repeats, 1)), corpus[k]]) for k in arrays}
    return train_lm(params, arrays, model_cfg, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                    weight_decay=cfg.weight_decay, seed=cfg.seed, name="sft", quiet=quiet)


def sft_config(smoke: bool, seed: int = 0) -> SFTConfig:
    """The course's SFT run (the smoke one with smoke=True) with the given seed."""
    return dataclasses.replace(SFTConfig.smoke() if smoke else SFTConfig(), seed=seed)


def sft_recipe(smoke: bool, cfg: SFTConfig) -> dict:
    """What makes pi_ref: this config and the base model of the same seed (paths.recipe)."""
    return recipe("sft", cfg, base=file_digest(base_model_path(smoke, cfg.seed)))


def sft_model_path(smoke: bool, seed: int = 0):
    """runs[/smoke]/[seed{seed}/]sft.ckpt."""
    return artifact_path(smoke, "sft.ckpt", seed)


def save_sft_model(smoke: bool, cfg: SFTConfig, params, model_cfg, history):
    """Save an SFT run of `cfg` (from the base model of cfg.seed) where `ensure_sft_model` finds it."""
    return save_checkpoint(sft_model_path(smoke, cfg.seed), params, model_cfg,
                           {"stage": "sft", "final_loss": float(history[-1]),
                            "made_by": sft_recipe(smoke, cfg)})


def ensure_sft_model(smoke: bool, seed: int = 0):
    """pi_ref of `seed` from runs[/smoke]/[seed{seed}/]sft.ckpt; fine-tuned from the base model of
    the same seed (built if needed) when missing or made by another recipe -> (params, GPTConfig)."""
    base, model_cfg = ensure_base_model(smoke, seed)
    cfg = sft_config(smoke, seed)

    def build():
        params, history = sft(base, model_cfg, ensure_tokenizer(smoke), cfg)
        return params, model_cfg, {"stage": "sft", "final_loss": float(history[-1])}

    params, model_cfg, _ = ensure_checkpoint(sft_model_path(smoke, seed), sft_recipe(smoke, cfg),
                                             build, "sft")
    return params, model_cfg
