"""Stage 02: pretrain the tiny GPT on the noisy capitals corpus (next-token cross-entropy).

    L(theta) = - (1/N) sum_docs sum_t log p_theta(x_t | x_<t)        over `<bos> doc <eos>`

Each corpus document is one row `<bos> doc <eos>` (right-padded); the loss covers every real
token after <bos>, eos included, so the base model learns where documents end.

`ensure_tokenizer` and `ensure_base_model` are what later stages call: they load the artifact
from `runs/` or, when it is missing or was made by another recipe (seed, config, tokenizer),
build it (training the tokenizer / running this stage); see paths.py.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from tokenizers import Tokenizer

from minirlhf.checkpoint import ensure_checkpoint, save_checkpoint
from minirlhf.config import check_fields
from minirlhf.model import GPTConfig, cross_entropy_loss, forward, init_params
from minirlhf.paths import artifact_path, file_digest, recipe, runs_dir
from minirlhf.tokenizer import encode_batch, load_or_train_tokenizer
from minirlhf.training import (
    Progress,
    batches,
    check_finite,
    init_train_state,
    make_optimizer,
    make_train_step,
)
from minirlhf.worlds.capitals import CapitalsConfig, make_corpus, tokenizer_training_texts

SEQ_LEN = 50  # longest corpus document is 47 tokens + bos + eos; see lesson 01


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pretraining run: model size, optimisation, data."""

    model: GPTConfig = GPTConfig(vocab_size=512, max_len=64, n_layer=3, n_head=4, d_model=96)
    """The GPT (~0.4M parameters); vocab_size must cover the tokenizer (512).  Chosen so that
    lessons 02+03 fit in about a minute on a 2-core CPU: at equal wall-clock a 3x96 model
    trained longer reached a lower loss than a 4x128 one."""
    steps: int = 500
    """Optimizer steps."""
    batch_size: int = 32
    """Documents per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (warmup then cosine decay to 10%)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    seed: int = 0
    """Seeds the init and the batch order."""

    def __post_init__(self):
        check_fields(self, counts=("steps", "batch_size"), positive=("lr",),
                     non_negative=("weight_decay",), naturals=("seed",))

    @classmethod
    def smoke(cls) -> PretrainConfig:
        """A 1-layer, 32-wide GPT trained for 30 steps: for the --smoke lessons and the tests."""
        return cls(model=GPTConfig(vocab_size=512, max_len=64, n_layer=1, n_head=2, d_model=32),
                   steps=30, batch_size=16)


def ensure_tokenizer(smoke: bool) -> Tokenizer:
    """runs/tokenizer.json, trained deterministically on the capitals texts when missing."""
    return load_or_train_tokenizer(runs_dir(smoke) / "tokenizer.json",
                                   tokenizer_training_texts(CapitalsConfig()))


def corpus_arrays(tok: Tokenizer, world: CapitalsConfig = CapitalsConfig()) -> dict:
    """The whole corpus encoded once: tokens/attention_mask/loss_mask, each [N_docs, SEQ_LEN]."""
    docs = make_corpus(world).docs
    enc = encode_batch(tok, [""] * len(docs), docs, max_len=SEQ_LEN)   # <bos> doc <eos>
    return {"tokens": enc.tokens, "attention_mask": enc.attention_mask, "loss_mask": enc.response_mask}


def lm_loss(params, batch, cfg: GPTConfig):
    """Masked next-token cross-entropy of a batch {tokens, attention_mask, loss_mask}:

        L(theta) = -(1/N) sum_{b, t > 0: m_bt = 1} log p_theta(x_bt | x_b,<t)

    m = loss_mask, N = the number of (b, t > 0) with m_bt = 1; column 0 is never scored (nothing
    precedes it).  The GPT pretraining objective (Radford et al. 2018, eq. 1; 2019), averaged
    per token.  -> (loss, {})."""
    logits = forward(params, batch["tokens"], batch["attention_mask"], cfg).logits   # [B, T, V]
    loss = cross_entropy_loss(logits, batch["tokens"], batch["loss_mask"])
    return loss, {}


# ----------------------------------------------------------------------------- the ptx term
# InstructGPT's "PPO-ptx" (Ouyang et al. 2022, eq. 2) keeps an aligned policy a language model of
# the pretraining corpus:  L = L_align + gamma L_LM.  PPO (ppo_train.py) and DPO (dpo_train.py) both
# carry the pretraining rows inside their batch under these keys, so that their minibatching and
# sharding treat them like every other row.

PTX_FIELDS = ("tokens", "attention_mask", "loss_mask")


def with_ptx_rows(batch: dict, table: dict, rows) -> dict:
    """batch plus ptx_{tokens, attention_mask, loss_mask} = table[...][rows] (numpy or jax rows)."""
    return {**batch, **{f"ptx_{k}": table[k][rows] for k in PTX_FIELDS}}


def ptx_loss(params, batch: dict, cfg: GPTConfig):
    """L_LM on the batch's pretraining rows: the next-token cross-entropy `lm_loss`,
    -(1/N) sum_{t>0, m_t=1} log pi(x_t | x_<t), over batch["ptx_*"]."""
    return lm_loss(params, {k: batch[f"ptx_{k}"] for k in PTX_FIELDS}, cfg)[0]


@functools.lru_cache(maxsize=16)
def lm_train_step(cfg: GPTConfig, steps: int, lr: float, weight_decay: float):
    """(optimizer, jitted train step) of `lm_loss`, one per (model, schedule): runs with the same
    settings (lesson 03's two SFT runs, repeated test calls) reuse one compiled program.  The
    schedule's numbers are inputs of the step (`make_optimizer(traced=True)`), so the program is
    the same for every schedule: lesson 03's SFT reads lesson 02's back from the persistent
    compilation cache instead of compiling it again."""
    optimizer = make_optimizer(lr, steps, weight_decay=weight_decay, traced=True)   # one program
    return optimizer, make_train_step(lambda p, b: lm_loss(p, b, cfg), optimizer)


def train_lm(params, arrays: dict, cfg: GPTConfig, *, steps: int, batch_size: int, lr: float,
             weight_decay: float, seed: int, name: str, quiet: bool = False):
    """Run `steps` AdamW steps of `lm_loss` on `arrays`; returns (params, loss history)."""
    optimizer, step_fn = lm_train_step(cfg, steps, lr, weight_decay)
    state, history = init_train_state(params, optimizer), []
    progress = Progress(name, steps, quiet=quiet)
    for i, batch in enumerate(batches(np.random.default_rng(seed), arrays, batch_size, steps), 1):
        state, metrics = step_fn(state, batch)
        history.append(float(metrics["loss"]))
        check_finite(name, i, history[-1])
        progress(i, {"loss": metrics["loss"]})
    return state.params, np.array(history)


def pretrain(tok: Tokenizer, cfg: PretrainConfig, quiet: bool = False):
    """Train a fresh GPT on the corpus -> (params, loss history)."""
    params = init_params(jax.random.PRNGKey(cfg.seed), cfg.model)
    return train_lm(params, corpus_arrays(tok), cfg.model, steps=cfg.steps, batch_size=cfg.batch_size,
                    lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed, name="pretrain", quiet=quiet)


def pretrain_config(smoke: bool, seed: int = 0) -> PretrainConfig:
    """The course's pretraining run (the smoke one with smoke=True) with the given seed."""
    return dataclasses.replace(PretrainConfig.smoke() if smoke else PretrainConfig(), seed=seed)


def base_model_recipe(smoke: bool, cfg: PretrainConfig) -> dict:
    """What makes the base model: this config and the tokenizer file (paths.recipe)."""
    return recipe("pretrain", cfg, tokenizer=file_digest(runs_dir(smoke) / "tokenizer.json"))


def base_model_path(smoke: bool, seed: int = 0):
    """runs[/smoke]/[seed{seed}/]base.ckpt."""
    return artifact_path(smoke, "base.ckpt", seed)


def save_base_model(smoke: bool, cfg: PretrainConfig, params, history):
    """Save a pretraining run of `cfg` where `ensure_base_model(smoke, cfg.seed)` finds it."""
    return save_checkpoint(base_model_path(smoke, cfg.seed), params, cfg.model,
                           {"stage": "pretrain", "final_loss": float(history[-1]),
                            "made_by": base_model_recipe(smoke, cfg)})


def ensure_base_model(smoke: bool, seed: int = 0):
    """The base model of `seed` (runs[/smoke]/[seed{seed}/]base.ckpt), pretrained and saved first
    when missing or made by another recipe -> (params, GPTConfig)."""
    cfg, tok = pretrain_config(smoke, seed), ensure_tokenizer(smoke)

    def build():
        params, history = pretrain(tok, cfg)
        return params, cfg.model, {"stage": "pretrain", "final_loss": float(history[-1])}

    params, model_cfg, _ = ensure_checkpoint(base_model_path(smoke, seed),
                                             base_model_recipe(smoke, cfg), build, "pretrain")
    return params, model_cfg
