"""Stage 06: direct preference optimisation of the transformer policy.

The policy starts at pi_ref = the SFT model (lesson 03) and is fitted to the train split of
the preference pairs collected in lesson 04 (no reward model anywhere):

    L_DPO(theta) = -E_(x, y_w, y_l) log sigma( beta log pi_theta(y_w|x)/pi_ref(y_w|x)
                                              - beta log pi_theta(y_l|x)/pi_ref(y_l|x) )
                                                                  (Rafailov et al. 2023, eq. 7)

The losses themselves (DPO, conservative DPO, IPO) live in `dpo.py` and see only four arrays
of summed sequence log-probs; this module produces those arrays from token batches.

Implementation details (each pinned by tests/test_dpo_train.py):
* log pi(y|x) is SUMMED over the response tokens, the final eos included; prompt and pad
  tokens contribute nothing (`model.sequence_logprobs` with the response mask).
* A response that never produced eos (cut by the length limit when it was sampled) is encoded
  WITHOUT eos (`reward_data.encode_responses`): appending one would score a different response.
* The reference log-probs log pi_ref(y_w|x), log pi_ref(y_l|x) never change, so they are
  computed ONCE (`with_reference_logps`, each distinct response once) and stored as two [N] arrays next to the encoded pairs.
  The training step never sees pi_ref's parameters: it cannot update them, and each step costs
  one forward/backward of the policy instead of two forwards + one backward.
* One jitted step: chosen and rejected rows are concatenated into ONE [2B, T] batch, one
  forward pass, then split (`concatenated_logps`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer

from minirlhf.checkpoint import ensure_checkpoint, save_checkpoint
from minirlhf.config import check_fields
from minirlhf.data import read_preferences
from minirlhf.dpo import LOSS_TYPES, preference_loss
from minirlhf.model import GPTConfig, sequence_logprobs
from minirlhf.paths import artifact_path, file_digest, recipe
from minirlhf.pretrain import corpus_arrays, ensure_tokenizer, ptx_loss, with_ptx_rows
from minirlhf.reward_data import check_fits, encode_responses, ensure_preferences
from minirlhf.sampling import Generation
from minirlhf.sft import ensure_sft_model, sft_model_path
from minirlhf.tokenizer import unique_rows
from minirlhf.training import (
    TRAINABLE,
    Progress,
    batches,
    check_finite,
    freeze_updates,
    gpt_labels,
    init_train_state,
    make_optimizer,
    make_train_step,
    stop_frozen,
)

REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """The DPO stage: which preference loss, its strength, and the optimisation."""

    loss_type: str = "dpo"
    """"dpo" (Rafailov et al. 2023 eq. 7; with label_smoothing > 0: conservative DPO) or "ipo"
    (Azar et al. 2023 eq. 17)."""
    beta: float = 0.2
    """KL strength: the implicit reward is beta * log pi_theta/pi_ref (tau in the IPO paper)."""
    label_smoothing: float = 0.0
    """cDPO epsilon in [0, 0.5): the assumed probability that a label is flipped (dpo only)."""
    steps: int = 60
    """Optimizer steps."""
    batch_size: int = 32
    """Preference pairs per step (2 * batch_size sequences per forward pass)."""
    lr: float = 1e-4
    """Peak AdamW learning rate (warmup, then cosine decay to 10%)."""
    warmup_steps: int = 10
    """Linear warmup steps of the learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    ptx_coef: float = 0.0
    """gamma of a pretraining term as in InstructGPT's PPO-ptx (Ouyang et al. 2022, eq. 2): each
    step adds gamma x the next-token loss on batch_size pretraining documents; 0 = plain DPO."""
    trainable: str = "all"
    """Which policy weights DPO updates (training.TRAINABLE): "all" (full fine-tuning) or
    "final_norm" (only ln_f, 2 x d_model numbers; it needs a far larger lr, e.g. 0.1)."""
    seed: int = 0
    """Seeds the batch order."""

    def __post_init__(self):
        check_fields(self, counts=("steps", "batch_size"), positive=("lr",), naturals=("seed",),
                     non_negative=("warmup_steps", "weight_decay", "ptx_coef"))
        if self.trainable not in TRAINABLE:
            raise ValueError(f"DPOConfig.trainable: expected one of {TRAINABLE}, got {self.trainable!r}")
        if not self.warmup_steps <= self.steps:
            raise ValueError(f"DPOConfig.warmup_steps: expected <= steps={self.steps}, got {self.warmup_steps}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"DPOConfig.loss_type: expected one of {LOSS_TYPES}, got {self.loss_type!r}")
        check_fields(self, positive=("beta",), unit=("label_smoothing",))
        if not self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig.label_smoothing: expected in [0, 0.5), got {self.label_smoothing}")
        if self.loss_type == "ipo" and self.label_smoothing:
            raise ValueError("DPOConfig: label_smoothing (cDPO) applies to loss_type='dpo' only, "
                             f"got loss_type='ipo' with label_smoothing={self.label_smoothing}")

    @classmethod
    def smoke(cls) -> DPOConfig:
        """A tiny run (4 steps of 8 pairs) for the --smoke lessons and the tests."""
        return cls(steps=4, batch_size=8, warmup_steps=1)


# ----------------------------------------------------------------------------- data

def encode_pairs(tok: Tokenizer, records: Sequence[dict], max_len: int) -> dict:
    """Preference records -> {chosen,rejected}_{tokens,attention_mask,response_mask}, each [N, max_len],
    right-padded `<bos> prompt response <eos>`; no eos where the record's `*_ended` flag is False
    (missing flag: the response ended)."""
    if not records:
        raise ValueError("encode_pairs: no records (an empty preference file?)")
    prompts, arrays = [r["prompt"] for r in records], {}
    for which in ("chosen", "rejected"):
        ended = [bool(r.get(f"{which}_ended", True)) for r in records]
        enc = encode_responses(tok, prompts, [r[which] for r in records], ended, max_len)
        arrays |= {f"{which}_tokens": enc.tokens, f"{which}_attention_mask": enc.attention_mask,
                   f"{which}_response_mask": enc.response_mask}
    return arrays


def concatenated_logps(params, batch: dict, cfg: GPTConfig):
    """(policy_chosen_logps [B], policy_rejected_logps [B]) from ONE forward pass on [2B, T].

    log pi(y|x) = sum_t response_mask_t log pi(y_t | x, y_<t)   (summed, Rafailov et al. sec. 4).
    batch: {chosen,rejected}_{tokens,attention_mask,response_mask}, each [B, T].
    """
    cat = lambda name: jnp.concatenate([batch[f"chosen_{name}"], batch[f"rejected_{name}"]])  # [2B, T]
    logps = sequence_logprobs(params, cat("tokens"), cat("attention_mask"), cat("response_mask"), cfg)
    return tuple(jnp.split(logps, 2))                                        # [B] each


_sequence_logprobs = jax.jit(sequence_logprobs, static_argnames=("cfg",))


def pair_logps(params, arrays: dict, cfg: GPTConfig, chunk: int = 256):
    """Summed log pi(y|x) of both responses of every pair -> (chosen_logps [N], rejected_logps [N])
    numpy float32.  Each DISTINCT response row is scored once (`tokenizer.unique_rows`: in K-wise
    comparisons a response takes part in up to K - 1 pairs), in chunks of `chunk` rows padded with
    all-pad rows (one compiled shape)."""
    cat = lambda name: np.concatenate([np.asarray(arrays[f"chosen_{name}"]),
                                       np.asarray(arrays[f"rejected_{name}"])])             # [2N, T]
    tokens, attention_mask, response_mask = cat("tokens"), cat("attention_mask"), cat("response_mask")
    first, inverse = unique_rows(np.concatenate([tokens, response_mask], axis=1))  # same tokens AND split
    rows = [a[first] for a in (tokens, attention_mask, response_mask)]                    # [U, T] each
    out = []
    for i in range(0, len(first), chunk):
        part = [a[i:i + chunk] for a in rows]
        n = len(part[0])
        part = [np.pad(a, ((0, chunk - n), (0, 0))) for a in part]
        out.append(np.asarray(_sequence_logprobs(params, *part, cfg=cfg))[:n])
    return tuple(np.split(np.concatenate(out)[inverse], 2))


def with_reference_logps(arrays: dict, ref_params, cfg: GPTConfig) -> dict:
    """The encoded pairs plus their cached reference log-probs, computed once:
    reference_chosen_logps = log pi_ref(y_w|x) [N], reference_rejected_logps = log pi_ref(y_l|x) [N]."""
    reference_chosen_logps, reference_rejected_logps = pair_logps(ref_params, arrays, cfg)
    return {**arrays, "reference_chosen_logps": reference_chosen_logps,
            "reference_rejected_logps": reference_rejected_logps}


# ----------------------------------------------------------------------------- loss and step

def dpo_batch_loss(params, batch: dict, cfg: GPTConfig, dcfg: DPOConfig):
    """L_DPO of one batch of pairs (Rafailov et al. 2023 eq. 7, or the variant dcfg selects).

    batch: the six token arrays [B, T] of `encode_pairs` and the cached reference_chosen_logps,
    reference_rejected_logps [B] of `with_reference_logps`.  -> (loss, metrics with TRL names:
    rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected).
    """
    params = stop_frozen(params, gpt_labels(params, dcfg.trainable))   # "final_norm": only ln_f learns
    policy_chosen_logps, policy_rejected_logps = concatenated_logps(params, batch, cfg)
    loss, metrics = preference_loss(policy_chosen_logps, policy_rejected_logps,   # DPO / cDPO / IPO
                                    batch["reference_chosen_logps"], batch["reference_rejected_logps"],
                                    dcfg.beta, dcfg.loss_type, dcfg.label_smoothing)
    if dcfg.ptx_coef > 0:   # + gamma L_LM on pretraining rows (PPO-ptx's term, applied to DPO)
        lm = ptx_loss(params, batch, cfg)
        loss = loss + dcfg.ptx_coef * lm
        metrics = {**metrics, "loss": loss, "loss/ptx": lm}
    return loss, metrics


def make_dpo_step(cfg: GPTConfig, dcfg: DPOConfig):
    """(optimizer, step): step(state, batch) -> (state, metrics) is ONE jitted function
    (forward on chosen ++ rejected, backward, clipped AdamW update; frozen weights get none).
    Runs that differ only in their seed get the same step, so it is traced and compiled once."""
    return _dpo_step(cfg, dataclasses.replace(dcfg, seed=0))


@functools.lru_cache(maxsize=16)
def _dpo_step(cfg: GPTConfig, dcfg: DPOConfig):
    optimizer = make_optimizer(dcfg.lr, dcfg.steps, warmup_steps=dcfg.warmup_steps,
                               weight_decay=dcfg.weight_decay)
    if dcfg.trainable != "all":
        optimizer = freeze_updates(optimizer, partial(gpt_labels, trainable=dcfg.trainable))
    return optimizer, make_train_step(partial(dpo_batch_loss, cfg=cfg, dcfg=dcfg), optimizer)


def train_dpo(params, arrays: dict, cfg: GPTConfig, dcfg: DPOConfig, quiet: bool = False,
              ptx: dict | None = None):
    """dcfg.steps DPO steps from `params` (= pi_ref) on `arrays` (pairs + cached reference log-probs)
    -> (params, history {metric: [steps] numpy}) with every metric of the step.  ptx: with
    dcfg.ptx_coef > 0, the pretraining table {tokens, attention_mask, loss_mask} (corpus_arrays)."""
    missing = [k for k in REFERENCE_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"train_dpo: arrays lack {missing}; call with_reference_logps(arrays, ref_params, cfg) first")
    if dcfg.ptx_coef > 0 and ptx is None:
        raise ValueError("train_dpo: dcfg.ptx_coef > 0 needs the pretraining table `ptx` "
                         "(pretrain.corpus_arrays(tok)); pass it, or set ptx_coef=0")
    ptx_rng = np.random.default_rng([dcfg.seed, 1])
    optimizer, step_fn = make_dpo_step(cfg, dcfg)
    state, history = init_train_state(params, optimizer), {}
    progress = Progress(f"dpo/{dcfg.loss_type}", dcfg.steps, quiet=quiet)
    batch_size = min(dcfg.batch_size, len(arrays[REFERENCE_KEYS[0]]))
    for i, batch in enumerate(batches(np.random.default_rng(dcfg.seed), arrays, batch_size, dcfg.steps), 1):
        if dcfg.ptx_coef > 0:
            batch = with_ptx_rows(batch, ptx, ptx_rng.integers(0, len(ptx["tokens"]), batch_size))
        state, metrics = step_fn(state, batch)
        for k, v in jax.device_get(metrics).items():
            history.setdefault(k, []).append(float(v))
        check_finite(f"dpo/{dcfg.loss_type}", i, history["loss"][-1])
        progress(i, {k: metrics[k] for k in ("loss", "rewards/margins", "rewards/accuracies")})
    return state.params, {k: np.array(v) for k, v in history.items()}


_preference_loss_jit = jax.jit(preference_loss, static_argnames="loss_type")


def evaluate_pairs(params, arrays: dict, cfg: GPTConfig, dcfg: DPOConfig) -> dict:
    """The loss and TRL metrics of `params` over every pair of `arrays` (e.g. the held-out split):
    rewards/accuracies there = how often the implicit reward ranks y_w above y_l."""
    policy_chosen_logps, policy_rejected_logps = pair_logps(params, arrays, cfg)
    _, metrics = _preference_loss_jit(                              # one program, not one per op
        policy_chosen_logps, policy_rejected_logps, arrays["reference_chosen_logps"],
        arrays["reference_rejected_logps"], dcfg.beta, dcfg.loss_type, dcfg.label_smoothing)
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


# ----------------------------------------------------------------------------- diagnostics

def implicit_rewards(params, ref_params, arrays: dict, cfg: GPTConfig, beta: float):
    """DPO's implicit reward r_theta(x, y) = beta log pi_theta(y|x)/pi_ref(y|x) (Rafailov et al. sec. 5),
    which equals r(x, y) - beta log Z(x) at the optimum: no reward model, only two policies.

    arrays: `encode_pairs` output ([N, T] each).  -> (chosen_rewards [N], rejected_rewards [N]) numpy.
    """
    policy_chosen_logps, policy_rejected_logps = pair_logps(params, arrays, cfg)
    reference_chosen_logps, reference_rejected_logps = pair_logps(ref_params, arrays, cfg)
    return (beta * (policy_chosen_logps - reference_chosen_logps),        # eq. 5 of sec. 5
            beta * (policy_rejected_logps - reference_rejected_logps))


@partial(jax.jit, static_argnames=("cfg",))
def sequence_logratios(params, ref_params, gen: Generation, cfg: GPTConfig):
    """log pi_theta(y|x) - log pi_ref(y|x) of each generated row (summed over the response) -> [B].

    For y ~ pi_theta its mean is the k1 estimator of the sequence-level KL(pi_theta || pi_ref)
    = E_{y ~ pi_theta}[log pi_theta(y|x) - log pi_ref(y|x)]; ONE term is not a KL (it is often < 0).
    gen: a `sampling.Generation` (left-padded prompts + responses, [B, T]).
    """
    args = (gen.tokens, gen.attention_mask, gen.response_mask, cfg)
    return sequence_logprobs(params, *args) - sequence_logprobs(ref_params, *args)


# ----------------------------------------------------------------------------- the stage

def load_pair_arrays(tok: Tokenizer, path, cfg: GPTConfig) -> dict:
    """A preference JSONL file -> `encode_pairs` arrays exactly as wide as its longest pair needs
    (at most cfg.max_len): a causal model's log-probs of a row's tokens do not depend on the pad
    columns after them, so wider arrays would only add work to every step."""
    records = read_preferences(path)
    width = check_fits(tok, records, cfg.max_len, source=str(path))
    return encode_pairs(tok, records, width)


def dpo_recipe(smoke: bool, dcfg: DPOConfig, train_prefs) -> dict:
    """What makes a DPO policy: this config, pi_ref (the SFT model of dcfg.seed) and the train
    preference file (paths.recipe)."""
    return recipe("dpo", dcfg, sft=file_digest(sft_model_path(smoke, dcfg.seed)),
                  preferences=file_digest(train_prefs))


def save_dpo_policy(smoke: bool, dcfg: DPOConfig, params, cfg: GPTConfig, history: dict, train_prefs):
    """Save a DPO run of `dcfg` on `train_prefs` to runs[/smoke]/[seed{seed}/]dpo.ckpt, with its recipe."""
    return save_checkpoint(artifact_path(smoke, "dpo.ckpt", dcfg.seed), params, cfg,
                           {"stage": "dpo", "config": dataclasses.asdict(dcfg),
                            "final_margin": float(history["rewards/margins"][-1]),
                            "made_by": dpo_recipe(smoke, dcfg, train_prefs)})


def build_dpo_policy(smoke: bool, dcfg: DPOConfig | None = None, quiet: bool = False, seed: int = 0):
    """Lesson 06's stage without the plots: pi_ref = SFT, the train preference pairs with cached
    reference log-probs, DPO.  -> (params, cfg, history)."""
    dcfg = dcfg or dataclasses.replace(DPOConfig.smoke() if smoke else DPOConfig(), seed=seed)
    tok, (ref_params, cfg) = ensure_tokenizer(smoke), ensure_sft_model(smoke, dcfg.seed)
    arrays = with_reference_logps(load_pair_arrays(tok, ensure_preferences(smoke, dcfg.seed)["train"], cfg),
                                  ref_params, cfg)
    ptx = corpus_arrays(tok) if dcfg.ptx_coef > 0 else None
    params, history = train_dpo(ref_params, arrays, cfg, dcfg, quiet=quiet, ptx=ptx)
    return params, cfg, history


def ensure_dpo_policy(smoke: bool, seed: int = 0):
    """The DPO policy of `seed` from runs[/smoke]/[seed{seed}/]dpo.ckpt, trained (lesson 06's
    stage) when missing or made by another recipe -> (params, GPTConfig)."""
    dcfg = dataclasses.replace(DPOConfig.smoke() if smoke else DPOConfig(), seed=seed)
    train_prefs = ensure_preferences(smoke, seed)["train"]

    def build():
        params, cfg, history = build_dpo_policy(smoke, dcfg)
        return params, cfg, {"stage": "dpo", "config": dataclasses.asdict(dcfg),
                             "final_margin": float(history["rewards/margins"][-1])}

    params, cfg, _ = ensure_checkpoint(artifact_path(smoke, "dpo.ckpt", seed),
                                       dpo_recipe(smoke, dcfg, train_prefs), build, "dpo")
    return params, cfg
