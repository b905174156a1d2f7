"""Stage 04, data: comparisons of the SFT model's answers, labelled by the simulated rater.

    for each prompt x, for each of its groups:
        y_1 .. y_K ~ pi_SFT(. | x)                     (temperature 1, independent samples)
        for every pair i < j of distinct responses:
            label ~ Bernoulli(sigmoid((r*(x, y_i) - r*(x, y_j)) / tau))
            D <- D + {(x, y_w, y_l)}

(Stiennon et al. 2020 sec. 3.4; Ouyang et al. 2022 sec. 3.5: comparisons of the policy's own
samples.  InstructGPT's labellers ranked K = 4..9 responses per prompt, which yields C(K, 2)
comparisons for the price of K samples; our rater answers each of those C(K, 2) questions
independently, so every comparison follows the Bradley-Terry model exactly.)  The train split
uses groups of K = 8 (28 comparisons per 8 samples); the evaluation splits use groups of 2, i.e.
independent pairs.  The dataset is JSON Lines in `data.py`'s format, one comparison
per line; each record carries metadata that the evaluation (and DPO / PPO) use:

    prompt, chosen, rejected           the triplet (x, y_w, y_l)
    group                              which K responses the comparison came from (the reward
                                       model trains on a group as one batch element)
    chosen_ended, rejected_ended       did the sample end with <eos>? (False: cut by the length
                                       limit; the reward model must see it unfinished)
    chosen_gold_reward, rejected_gold_reward   r*(x, y) of the capitals world
    p_chosen                           the rater's P(y_w > y_l): its Bayes-optimal accuracy on
                                       this pair is max(p_chosen, 1 - p_chosen)
    split                              "train", "valid", "heldout" or "ood"

The four files: "train" (the comparisons the reward model and DPO learn from) and "valid" (fresh
pairs on the SAME train prompts, never trained on: the in-distribution held-out set on which the
reward model is validated, as InstructGPT's RM is), "heldout" (countries alignment never saw) and
"ood" (the unseen question template).

Implementation details (each pinned by tests/test_reward.py):
* Comparisons of two identical responses (same text, same eos flag) are SKIPPED: the label is a
  coin flip that teaches nothing (the loss gradient is zero in expectation) and the Bayes rate of
  such a pair is 1/2.  The SFT model is peaked, so this removes a sizeable fraction; the count is
  returned and printed.
* `encode_groups` rebuilds the groups from the records (responses identified by text and eos
  flag), so a file without "group" fields (e.g. a user's own pairs) is a set of groups of 2.
* A response that did not end with <eos> is encoded WITHOUT the eos that `encode_batch` appends
  (`encode_responses`): the reward is read at the last real token, so an eos would make a
  truncated answer look finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tokenizers import Tokenizer

from minirlhf.config import check_fields
from minirlhf.data import read_preferences, write_preferences
from minirlhf.evaluation import sample_answers
from minirlhf.model import GPTConfig
from minirlhf.paths import artifact_path, atomic_write, build_lock, file_digest, recipe
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.sft import ensure_sft_model, sft_model_path
from minirlhf.tokenizer import PAD_ID, EncodedBatch, encode_batch, encode_text
from minirlhf.worlds.capitals import (
    CapitalsConfig,
    gold_reward,
    parse_country,
    rate_pair,
    split_prompts,
)

PREFERENCE_SPLITS = ("train", "valid", "heldout", "ood")
# "valid" asks the train prompts again (fresh samples); the others ask their world split's prompts.
PROMPT_SPLIT = {"train": "train", "valid": "train", "heldout": "heldout", "ood": "ood"}


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """How the preference dataset is collected from the SFT model."""

    groups_per_prompt: int = 20
    """Groups of responses sampled per train prompt (32 prompts x 20 groups x 8 responses = 5120
    samples, as many as 80 independent pairs per prompt would take)."""
    responses_per_group: int = 8
    """K: responses per train group; every pair of distinct responses in a group is compared
    (C(8, 2) = 28 comparisons per group before skipping identical ones, 7x more than K/2 = 4
    independent pairs from the same 8 samples)."""
    eval_pairs_per_prompt: int = 24
    """Pairs sampled per prompt of the evaluation files: valid (32 train prompts -> 768 pairs before
    skipping), held-out and OOD (8 prompts each -> 192)."""
    temperature: float = 1.0
    """Sampling temperature of the SFT model (1 = its own distribution)."""
    seed: int = 0
    """Seeds the sampling keys and the rater's coin flips."""
    world: CapitalsConfig = dataclasses.field(default_factory=CapitalsConfig)
    """The capitals world; its rater_tau is the rater's temperature."""

    def __post_init__(self):
        check_fields(self, counts=("groups_per_prompt", "responses_per_group", "eval_pairs_per_prompt"),
                     positive=("temperature",), naturals=("seed",))
        if self.responses_per_group < 2:
            raise ValueError(f"PreferenceConfig.responses_per_group: expected >= 2 (a comparison needs "
                             f"two responses), got {self.responses_per_group}")

    @classmethod
    def smoke(cls) -> PreferenceConfig:
        """1 group of 4 responses per train prompt, 4 pairs per evaluation prompt: for the --smoke
        lessons and the tests."""
        return cls(groups_per_prompt=1, responses_per_group=4, eval_pairs_per_prompt=4)


def preference_paths(smoke: bool, seed: int = 0) -> dict[str, Path]:
    """{split: runs[/smoke]/[seed{seed}/]preferences_{split}.jsonl} for train, valid, heldout, ood."""
    return {s: artifact_path(smoke, f"preferences_{s}.jsonl", seed) for s in PREFERENCE_SPLITS}


# ----------------------------------------------------------------------------- collection

def collect_preferences(params, cfg: GPTConfig, tok: Tokenizer, prompts: Sequence[str], split: str,
                        key: jax.Array, rng: np.random.Generator, n_groups: int, tau: float,
                        temperature: float = 1.0, group_size: int = 2) -> tuple[list[dict], int]:
    """Sample n_groups * group_size responses per prompt from the policy; in each group (rows
    group_size * g .. group_size * (g + 1) - 1, one prompt) let the simulated rater compare every
    pair i < j of distinct responses -> (records, number of skipped identical comparisons).
    group_size = 2 gives independent pairs.  Record "group" numbers run over the whole call."""
    samples = sample_answers(params, cfg, tok, prompts, key, n=n_groups * group_size,
                             temperature=temperature)
    records, n_skipped = [], 0
    for group, start in enumerate(range(0, len(samples.texts), group_size)):
        prompt = samples.prompts[start]
        for i, j in itertools.combinations(range(start, start + group_size), 2):
            (y1, y2), (e1, e2) = (samples.texts[i], samples.texts[j]), (samples.ended[i], samples.ended[j])
            if y1 == y2 and e1 == e2:
                n_skipped += 1  # identical responses: an uninformative coin-flip label (module doc)
                continue
            pair = rate_pair(rng, parse_country(prompt), y1, y2, ended1=bool(e1), ended2=bool(e2), tau=tau)
            chosen_i, rejected_i = (i, j) if pair.y1_preferred else (j, i)
            records.append({
                "prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected, "group": group,
                "chosen_ended": bool(samples.ended[chosen_i]),
                "rejected_ended": bool(samples.ended[rejected_i]),
                "chosen_gold_reward": float(samples.gold_reward[chosen_i]),
                "rejected_gold_reward": float(samples.gold_reward[rejected_i]),
                "p_chosen": pair.p_chosen, "split": split,
            })
    return records, n_skipped


def build_preferences(params, cfg: GPTConfig, tok: Tokenizer, pcfg: PreferenceConfig,
                      paths: dict[str, Path], quiet: bool = False) -> dict[str, Path]:
    """Collect the three splits with the policy `params` and write them to `paths` (JSONL)."""
    keys = jax.random.split(jax.random.PRNGKey(pcfg.seed), len(PREFERENCE_SPLITS))
    for split, key in zip(PREFERENCE_SPLITS, keys):
        rng = np.random.default_rng([pcfg.seed, PREFERENCE_SPLITS.index(split)])
        n_groups, size = ((pcfg.groups_per_prompt, pcfg.responses_per_group) if split == "train"
                          else (pcfg.eval_pairs_per_prompt, 2))
        prompts = split_prompts(PROMPT_SPLIT[split])
        records, n_skipped = collect_preferences(params, cfg, tok, prompts, split, key, rng, n_groups,
                                                 pcfg.world.rater_tau, pcfg.temperature, size)
        write_preferences(paths[split], records)
        if not quiet:
            print(f"[preferences] {split:8s} {len(records):5d} comparisons ({n_groups} groups of {size} "
                  f"per prompt) written to {paths[split]} ({n_skipped} of identical responses skipped)")
    return paths


def ensure_preferences(smoke: bool, seed: int = 0) -> dict[str, Path]:
    """{split: path} of runs[/smoke]/[seed{seed}/]preferences_{train,valid,heldout,ood}.jsonl,
    collected from the SFT model of `seed` (built first if needed) when a file is missing, was
    changed, or was made by another recipe.  The recipe and the files' digests are kept beside
    them in preferences.json (a JSONL file has no room for them), written last."""
    paths = preference_paths(smoke, seed)
    manifest = artifact_path(smoke, "preferences.json", seed)
    params, cfg = ensure_sft_model(smoke, seed)
    pcfg = dataclasses.replace(PreferenceConfig.smoke() if smoke else PreferenceConfig(), seed=seed)
    want = recipe("preferences", pcfg, sft=file_digest(sft_model_path(smoke, seed)))
    with build_lock(manifest):
        try:
            doc = json.loads(manifest.read_text())
            ok = doc["made_by"] == want and doc["files"] == {s: file_digest(p) for s, p in paths.items()}
        except (OSError, ValueError, KeyError, TypeError):   # missing or damaged manifest / file
            ok = False
        if not ok:
            print(f"[preferences] collecting preference pairs into {manifest.parent} (lesson 04's data)")
            build_preferences(params, cfg, ensure_tokenizer(smoke), pcfg, paths)
            files = {s: file_digest(p) for s, p in paths.items()}
            atomic_write(manifest, json.dumps({"made_by": want, "files": files}, indent=1).encode())
    return paths


# ----------------------------------------------------------------------------- encoding

def encode_responses(tok: Tokenizer, prompts: Sequence[str], responses: Sequence[str],
                     ended: Sequence[bool], max_len: int) -> EncodedBatch:
    """`encode_batch` (right-padded `<bos> prompt response <eos>`), except that a row whose
    response did NOT end drops the final eos: its token becomes <pad> and its masks 0, so the
    sequence ends on the last response token, as it was generated.  -> [B, max_len] arrays."""
    ended = np.asarray(ended, bool)
    if ended.shape != (len(responses),):
        raise ValueError(f"encode_responses: {len(responses)} responses but ended has shape {ended.shape}")
    enc = encode_batch(tok, prompts, responses, max_len=max_len)
    tokens, attention_mask, response_mask = (a.copy() for a in enc)
    rows = np.flatnonzero(~ended)
    last = attention_mask[rows].sum(axis=1) - 1               # column of the appended eos (right-padded)
    tokens[rows, last] = PAD_ID
    attention_mask[rows, last] = 0
    response_mask[rows, last] = 0
    return EncodedBatch(tokens, attention_mask, response_mask)


class PreferenceData(NamedTuple):
    """A preference file encoded for the reward model (numpy arrays, one row per pair)."""
    chosen_tokens: np.ndarray            # [N, T] int32, right-padded, eos only if chosen_ended
    chosen_attention_mask: np.ndarray    # [N, T] int32
    rejected_tokens: np.ndarray          # [N, T] int32
    rejected_attention_mask: np.ndarray  # [N, T] int32
    chosen_gold: np.ndarray              # [N] float64 r*(x, y_w); NaN when unknown
    rejected_gold: np.ndarray            # [N] float64 r*(x, y_l); NaN when unknown
    p_chosen: np.ndarray                 # [N] float64 the rater's P(y_w > y_l); NaN when unknown


def _gold(record: dict, which: str) -> float:
    """r* of the chosen/rejected response: the stored value, else computed when the prompt is a
    capitals prompt (a user's own file), else NaN."""
    if f"{which}_gold_reward" in record:
        return float(record[f"{which}_gold_reward"])
    try:
        return gold_reward(parse_country(record["prompt"]), record[which],
                           bool(record.get(f"{which}_ended", True)))
    except ValueError:
        return float("nan")


def pair_lengths(tok: Tokenizer, records: Sequence[dict], source: str = "records") -> np.ndarray:
    """[N] the longer `<bos> prompt response <eos>` of each record's two responses, in tokens.  A
    character the tokenizer cannot encode is a ValueError naming `source` (e.g. the file), line
    and field."""
    def n_tokens(i, r, field):
        return len(encode_text(tok, r[field], what=f"{source} line {i} field {field!r}"))
    return np.array([2 + n_tokens(i, r, "prompt") + max(n_tokens(i, r, w) for w in ("chosen", "rejected"))
                     for i, r in enumerate(records, start=1)], np.int64)


def needed_length(tok: Tokenizer, records: Sequence[dict], source: str = "records") -> int:
    """Longest `<bos> prompt response <eos>` over both responses of every record (`pair_lengths`)."""
    return int(pair_lengths(tok, records, source).max(initial=0))


def check_fits(tok: Tokenizer, records: Sequence[dict], max_len: int, source: str = "records") -> int:
    """needed_length of the records; a ValueError naming `source` and the first line whose pair
    needs more than max_len tokens (GPTConfig.max_len) if any does."""
    lengths = pair_lengths(tok, records, source)
    too_long = np.flatnonzero(lengths > max_len)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(f"{source} line {i + 1}: the pair needs {lengths[i]} tokens > "
                         f"GPTConfig.max_len={max_len} ({too_long.size} of {len(lengths)} pairs "
                         "are too long); shorten or drop them")
    return int(lengths.max(initial=0))


def encode_preferences(tok: Tokenizer, records: Sequence[dict], max_len: int = SEQ_LEN) -> PreferenceData:
    """Records (e.g. from `data.read_preferences`) -> PreferenceData of width max_len."""
    if not records:
        raise ValueError("encode_preferences: no records (an empty preference file?)")
    prompts = [r["prompt"] for r in records]
    enc = {w: encode_responses(tok, prompts, [r[w] for r in records],
                               [bool(r.get(f"{w}_ended", True)) for r in records], max_len)
           for w in ("chosen", "rejected")}
    gold = {w: np.array([_gold(r, w) for r in records], np.float64) for w in ("chosen", "rejected")}
    p_chosen = np.array([float(r.get("p_chosen", np.nan)) for r in records], np.float64)
    return PreferenceData(enc["chosen"].tokens, enc["chosen"].attention_mask,
                          enc["rejected"].tokens, enc["rejected"].attention_mask,
                          gold["chosen"], gold["rejected"], p_chosen)


def load_preference_data(tok: Tokenizer, paths: dict[str, Path], max_len: int,
                         model_max_len: int | None = None) -> dict[str, PreferenceData]:
    """{split: path} -> {split: PreferenceData}, every split at the same width (one jit shape):
    max_len, or longer (up to what the files need) when a response does not fit.  A file that
    needs more than model_max_len tokens (the model's GPTConfig.max_len) is a ValueError."""
    records = {s: read_preferences(p) for s, p in paths.items()}   # parsed once per file (data.py)
    needed = {s: (needed_length(tok, r, source=str(paths[s])) if model_max_len is None
                  else check_fits(tok, r, model_max_len, source=str(paths[s])))
              for s, r in records.items()}
    width = max([max_len, *needed.values()])
    return {s: encode_preferences(tok, r, width) for s, r in records.items()}


class GroupedPreferences(NamedTuple):
    """A preference file as groups of responses to one prompt (what the reward model trains on)."""
    tokens: np.ndarray          # [G, K, T] int32, right-padded, eos only if the response ended
    attention_mask: np.ndarray  # [G, K, T] int32
    wins: np.ndarray            # [G, K, K] float32, W[g, i, j] = times response i was chosen over j


def encode_groups(tok: Tokenizer, records: Sequence[dict], max_len: int = SEQ_LEN,
                  source: str = "records") -> GroupedPreferences:
    """Records -> GroupedPreferences: the records that share a "group" value form one group (a
    record without "group" is a group of its own), its responses the distinct (text, eos flag)
    pairs among them.  K is the largest group's size; a smaller group is padded by repeating its
    first response with no comparison (it adds nothing to the loss).  Records of one group that
    ask different prompts are a ValueError naming `source` and the line."""
    if not records:
        raise ValueError(f"encode_groups: no records in {source} (an empty preference file?)")
    groups: dict = {}                   # group key -> {"prompt", "responses": {(text, ended): k}, "wins"}
    for line, r in enumerate(records, start=1):
        key = ("group", r["group"]) if "group" in r else ("line", line)
        g = groups.setdefault(key, {"prompt": r["prompt"], "line": line, "responses": {}, "wins": []})
        if r["prompt"] != g["prompt"]:
            raise ValueError(f"{source} line {line}: group {r.get('group')!r} asks {r['prompt']!r}, but its "
                             f"first record (line {g['line']}) asks {g['prompt']!r}: a group compares "
                             "responses to ONE prompt")
        ids = [g["responses"].setdefault((r[w], bool(r.get(f"{w}_ended", True))), len(g["responses"]))
               for w in ("chosen", "rejected")]
        g["wins"].append(ids)
    K = max(len(g["responses"]) for g in groups.values())
    prompts, texts, ended = [], [], []
    wins = np.zeros((len(groups), K, K), np.float32)
    for gi, g in enumerate(groups.values()):
        responses = list(g["responses"]) + [next(iter(g["responses"]))] * (K - len(g["responses"]))
        prompts += [g["prompt"]] * K
        texts += [text for text, _ in responses]
        ended += [e for _, e in responses]
        for w, l in g["wins"]:
            wins[gi, w, l] += 1
    enc = encode_responses(tok, prompts, texts, ended, max_len)
    G, T = len(groups), enc.tokens.shape[1]
    return GroupedPreferences(enc.tokens.reshape(G, K, T), enc.attention_mask.reshape(G, K, T), wins)


def load_groups(tok: Tokenizer, path, width: int | None = None) -> GroupedPreferences:
    """A preference JSONL file -> `encode_groups`, `width` tokens wide (default: exactly what the
    file needs, so no column of padding costs training compute; `load_preference_data` has
    already checked the file against the model's max_len)."""
    records = read_preferences(path)
    return encode_groups(tok, records, width or needed_length(tok, records, source=str(path)),
                         source=str(path))
