"""Expert iteration: STaR (Zelikman et al. 2022) without rationales, also
called rejection-sampling fine-tuning: sample G answers per train prompt, keep those the
verifier accepts, fine-tune on them with the SFT loss, repeat.  It continues from the current
policy each round (as RAFT, Dong et al. 2023, does) rather than restarting from pi_ref as STaR
does: with a few dozen steps per round the difference is small, and it is one fewer copy.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from functools import partial

import jax
import numpy as np
import optax
from tokenizers import Tokenizer

from minirlhf.config import check_fields
from minirlhf.evaluation import MAX_NEW_TOKENS, PROMPT_LEN
from minirlhf.grpo_train import PromptTable, prompt_table
from minirlhf.model import GPTConfig
from minirlhf.pretrain import lm_loss
from minirlhf.sampling import generate
from minirlhf.training import Progress
from minirlhf.verifier import Verifier, make_verifier, verifiable_reward
from minirlhf.worlds.capitals import split_prompts


@dataclasses.dataclass(frozen=True)
class ExpertIterationConfig:
    """Expert iteration (STaR without rationales): sample, keep the verified answers, SFT."""

    rounds: int = 3
    """Sample -> filter -> fine-tune rounds."""
    samples_per_prompt: int = 8
    """G answers sampled per training prompt each round."""
    sft_steps: int = 20
    """Adam steps of the response-masked SFT loss per round."""
    batch_size: int = 32
    """Kept answers per SFT step (drawn with replacement when fewer were kept)."""
    lr: float = 3e-4
    """Adam step size (constant, one optimizer state across rounds)."""
    temperature: float = 1.0
    """Sampling temperature."""
    prompt_len: int = PROMPT_LEN
    """Width of the left-padded prompts."""
    max_new_tokens: int = MAX_NEW_TOKENS
    """Response budget."""
    seed: int = 0
    """Seeds the samples and the SFT batch order."""

    def __post_init__(self):
        check_fields(self, counts=("rounds", "samples_per_prompt", "sft_steps", "batch_size",
                                   "prompt_len", "max_new_tokens"),
                     positive=("lr", "temperature"))

    @classmethod
    def smoke(cls) -> ExpertIterationConfig:
        """Two rounds of 2 samples per prompt and 3 steps: for the --smoke lessons and tests."""
        return cls(rounds=2, samples_per_prompt=2, sft_steps=3, batch_size=8)


@partial(jax.jit, static_argnames=("model_cfg", "max_new_tokens", "temperature"))
def sample_and_verify(params, table: PromptTable, verifier: Verifier, rows, key, *,
                      model_cfg: GPTConfig, max_new_tokens: int, temperature: float):
    """One answer per prompt row `rows` [B] -> (Generation, verifiable reward [B])."""
    gen = generate(params, table.tokens[rows], table.attention_mask[rows], key, cfg=model_cfg,
                   max_new_tokens=max_new_tokens, temperature=temperature)
    return gen, verifiable_reward(verifier, gen.tokens, gen.response_mask, table.answer[rows])


@functools.cache
def sft_optimizer(lr: float) -> optax.GradientTransformation:
    """Adam with global-norm clipping at 1 (cached: one compiled SFT step per lr)."""
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))


@partial(jax.jit, static_argnames=("lr", "model_cfg"))
def sft_step(params, opt_state, batch: dict, *, lr: float, model_cfg: GPTConfig):
    """One Adam step of pretrain.lm_loss with loss_mask = the response: the SFT loss
    -(1/N) sum_{t in y} log pi(y_t | x, y_<t) (sft.py) on kept answers -> (params, opt_state, loss)."""
    (loss, _), grads = jax.value_and_grad(lm_loss, has_aux=True)(params, batch, model_cfg)
    updates, opt_state = sft_optimizer(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def expert_iteration(policy_params: dict, model_cfg: GPTConfig, tok: Tokenizer,
                     cfg: ExpertIterationConfig, prompts: list[str] | None = None,
                     quiet: bool = False):
    """cfg.rounds of: G samples per prompt -> keep the verified ones -> cfg.sft_steps SFT steps.
    -> (params, history) with history[name] = [rounds] numpy arrays: "gold/accuracy" (fraction
    of the round's samples the verifier accepted), "kept" (their number), "loss" (mean SFT loss
    of the round), "time/round"."""
    table = prompt_table(tok, list(prompts or split_prompts("train")), cfg.prompt_len)
    verifier = make_verifier(tok, model_cfg.vocab_size)
    rows = np.repeat(np.arange(table.tokens.shape[0], dtype=np.int32), cfg.samples_per_prompt)  # [B]
    params = jax.device_put(policy_params, may_alias=False)        # distinct buffers, no program
    opt_state = jax.jit(sft_optimizer(cfg.lr).init)(params)   # one program for the Adam state
    rng, key = np.random.default_rng(cfg.seed), jax.random.PRNGKey(cfg.seed)
    history, progress = {}, Progress("expert-iteration", cfg.rounds, n_prints=cfg.rounds,
                                     quiet=quiet)
    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        key, k_sample = jax.random.split(key)
        gen, correct = sample_and_verify(params, table, verifier, rows, k_sample,
                                         model_cfg=model_cfg, max_new_tokens=cfg.max_new_tokens,
                                         temperature=cfg.temperature)
        kept = np.flatnonzero(np.asarray(correct) > 0)
        losses = []
        if kept.size:
            data = {"tokens": np.asarray(gen.tokens)[kept],
                    "attention_mask": np.asarray(gen.attention_mask)[kept],
                    "loss_mask": np.asarray(gen.response_mask)[kept]}
            for _ in range(cfg.sft_steps):
                pick = rng.choice(kept.size, cfg.batch_size, replace=kept.size < cfg.batch_size)
                params, opt_state, loss = sft_step(params, opt_state,
                                                   {k: v[pick] for k, v in data.items()},
                                                   lr=cfg.lr, model_cfg=model_cfg)
                losses.append(float(loss))
        metrics = {"gold/accuracy": float(np.mean(np.asarray(correct))), "kept": float(kept.size),
                   "loss": float(np.mean(losses)) if losses else float("nan"),
                   "time/round": time.perf_counter() - t0}
        for name, value in metrics.items():
            history.setdefault(name, []).append(value)
        progress(r, {k: metrics[k] for k in ("gold/accuracy", "kept", "loss")})
    return params, {k: np.array(v) for k, v in history.items()}
