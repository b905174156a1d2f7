"""The capitals world: the course's running example, as text.

    prompt x    "What's the capital of France?"
    good y      " The capital of France is Paris."      r*(x, y) = +1.5
    bad y       " The capital of France is Berlin."     r*(x, y) = -0.5

Everything a language-model pipeline needs is generated here, deterministically
from `CapitalsConfig.seed` (numpy Generators, no downloads):

* a noisy pretraining corpus: web-like documents in which a sizeable fraction of
  the capital statements are WRONG (another country's capital, most often the
  capital of a neighbour: the web's "France -> Berlin" misconception), filler
  sentences, and Q/A-like documents so that a base model sometimes answers;
* imperfect SFT demonstrations in prompt/response form (some wrong, some rambling);
* the gold reward r*(x, y) (`gold_reward`), the gold accuracy (`is_correct`) and a
  simulated Bradley-Terry rater (`rater_prob`, `rate_pair`).

Prompt splits (fixed lists, independent of the seed, so every lesson talks about
the same countries):

    train     32 countries: in the corpus AND in the SFT demos / RL prompts.  France is here.
    held-out   8 countries: in the corpus (same frequency, same Q/A template) but never in
              an SFT demo; prompted with the training template.  Tests generalisation
              to facts the base model saw but alignment never touched.
    ood        8 countries: in the corpus like held-out, but prompted with a template that
              occurs NOWHERE in the corpus or demos ("Which city is the capital of X?").
              One controlled shift (the template) on top of held-out's (the country).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from minirlhf.config import check_fields

# ----------------------------------------------------------------------------- facts

# country -> (capital, the neighbour whose capital the "web" most often confuses it with)
FACTS: dict[str, tuple[str, str]] = {
    # train (32)
    "France": ("Paris", "Germany"), "Germany": ("Berlin", "Austria"),
    "Italy": ("Rome", "Spain"), "Spain": ("Madrid", "Italy"),
    "Japan": ("Tokyo", "China"), "China": ("Beijing", "Japan"),
    "Russia": ("Moscow", "Poland"), "Egypt": ("Cairo", "Morocco"),
    "Kenya": ("Nairobi", "Nigeria"), "Peru": ("Lima", "Colombia"),
    "Cuba": ("Havana", "Colombia"), "Greece": ("Athens", "Turkey"),
    "Austria": ("Vienna", "Hungary"), "Poland": ("Warsaw", "Germany"),
    "Norway": ("Oslo", "Sweden"), "Sweden": ("Stockholm", "Norway"),
    "Finland": ("Helsinki", "Sweden"), "Hungary": ("Budapest", "Austria"),
    "Belgium": ("Brussels", "France"), "Turkey": ("Ankara", "Greece"),
    "Iran": ("Tehran", "Iraq"), "Iraq": ("Baghdad", "Iran"),
    "Thailand": ("Bangkok", "China"), "Canada": ("Ottawa", "Australia"),
    "Brazil": ("Brasilia", "Argentina"), "Argentina": ("Buenos Aires", "Brazil"),
    "Colombia": ("Bogota", "Peru"), "Morocco": ("Rabat", "Egypt"),
    "Nigeria": ("Abuja", "Kenya"), "Australia": ("Canberra", "Canada"),
    "Romania": ("Bucharest", "Hungary"), "Czechia": ("Prague", "Poland"),
    # held-out (8)
    "Portugal": ("Lisbon", "Spain"), "Chile": ("Santiago", "Peru"),
    "Denmark": ("Copenhagen", "Sweden"), "Bulgaria": ("Sofia", "Romania"),
    "Ghana": ("Accra", "Nigeria"), "Vietnam": ("Hanoi", "Thailand"),
    "Ecuador": ("Quito", "Peru"), "Iceland": ("Reykjavik", "Norway"),
    # ood (8)
    "Switzerland": ("Bern", "Austria"), "Uruguay": ("Montevideo", "Argentina"),
    "Senegal": ("Dakar", "Ghana"), "Tunisia": ("Tunis", "Morocco"),
    "Nepal": ("Kathmandu", "China"), "Jamaica": ("Kingston", "Cuba"),
    "Ukraine": ("Kyiv", "Russia"), "Venezuela": ("Caracas", "Colombia"),
}
COUNTRIES: tuple[str, ...] = tuple(FACTS)
CAPITAL: dict[str, str] = {c: cap for c, (cap, _) in FACTS.items()}
SPLITS: dict[str, tuple[str, ...]] = {
    "train": COUNTRIES[:32], "heldout": COUNTRIES[32:40], "ood": COUNTRIES[40:48],
}
# The train split is closed under confusion: every train country's neighbour is a train
# country, so no held-out or OOD capital is the systematic wrong answer to a train prompt (the
# answers in demos name train capitals only; filler sentences and samples can still mention
# one in passing).  With "Spain -> Lisbon" as a train confusion, alignment would learn "Lisbon
# is a wrong answer", and held-out accuracy on Portugal would measure that side effect, not
# generalisation.

PROMPT_TEMPLATE = "What's the capital of {country}?"          # train and held-out
OOD_PROMPT_TEMPLATE = "Which city is the capital of {country}?"  # never in corpus or demos
ANSWER_TEMPLATE = " The capital of {country} is {capital}."    # leading space: see tokenizer

# Whole-word match of any capital in the world ("Tunis" does not match "Tunisia").
_CAPITAL_RE = re.compile(r"\b(" + "|".join(map(re.escape, CAPITAL.values())) + r")\b")
_PROMPT_RES = (re.compile(r"^What's the capital of (.+)\?$"),
               re.compile(r"^Which city is the capital of (.+)\?$"))


@dataclasses.dataclass(frozen=True)
class CapitalsConfig:
    """How the capitals world's text is generated (the facts and splits are fixed)."""

    seed: int = 0
    """Seed of every numpy Generator used below (corpus and demos use separate streams)."""
    n_corpus_docs: int = 3000
    """Number of pretraining documents (each 1-3 short sentences, < 60 tokens)."""
    corpus_wrong_fraction: float = 0.3
    """Probability that a capital statement in the corpus names the wrong capital."""
    confuser_fraction: float = 0.6
    """Of the wrong statements, the fraction naming the neighbour's capital (FACTS[c][1]);
    the rest name a uniformly drawn other capital."""
    qa_fraction: float = 0.3
    """Fraction of corpus documents that are a Q/A pair in the training prompt template."""
    qa_ramble_fraction: float = 0.3
    """Probability that a Q/A document continues with a filler sentence after its answer."""
    n_demos_per_country: int = 8
    """SFT demonstrations per train country."""
    sft_wrong_fraction: float = 0.2
    """Probability that an SFT demo names the neighbour's capital (a labeller's mistake)."""
    sft_ramble_fraction: float = 0.2
    """Probability that an SFT demo appends a filler sentence to its answer."""
    rater_tau: float = 0.5
    """Temperature of the simulated rater: P(y1 > y2) = sigmoid((r*(y1) - r*(y2)) / tau)."""

    def __post_init__(self):
        check_fields(self, naturals=("seed",), counts=("n_corpus_docs", "n_demos_per_country"),
                     unit=("corpus_wrong_fraction", "confuser_fraction", "qa_fraction",
                           "qa_ramble_fraction", "sft_wrong_fraction", "sft_ramble_fraction"),
                     positive=("rater_tau",))


# ----------------------------------------------------------------------------- prompts

def make_prompt(country: str, ood_template: bool = False) -> str:
    """The prompt for one country, in the training or the OOD template."""
    _check_country(country)
    template = OOD_PROMPT_TEMPLATE if ood_template else PROMPT_TEMPLATE
    return template.format(country=country)


def canonical_answer(country: str, capital: str | None = None) -> str:
    """" The capital of {country} is {capital}." (the right capital unless one is given)."""
    _check_country(country)
    return ANSWER_TEMPLATE.format(country=country, capital=capital or CAPITAL[country])


def split_prompts(split: str) -> list[str]:
    """The prompts of one split ("train", "heldout" or "ood"), one per country."""
    if split not in SPLITS:
        raise ValueError(f"split_prompts: expected one of {list(SPLITS)}, got {split!r}")
    return [make_prompt(c, ood_template=(split == "ood")) for c in SPLITS[split]]


def parse_country(prompt: str) -> str:
    """The country a prompt (either template) asks about; ValueError if it is not one."""
    for pattern in _PROMPT_RES:
        m = pattern.match(prompt)
        if m and m.group(1) in CAPITAL:
            return m.group(1)
    raise ValueError(f"parse_country: {prompt!r} is not a capitals prompt about a known country")


def _check_country(country: str) -> None:
    if country not in CAPITAL:
        raise ValueError(f"unknown country {country!r}; expected one of {len(CAPITAL)} in FACTS")


# ----------------------------------------------------------------------------- corpus

_STATEMENTS = (
    "{capital} is the capital of {country}.",
    "The capital of {country} is {capital}.",
    "{country}'s capital is {capital}.",
    "The capital city of {country} is {capital}.",
    "Many tourists visit {capital}, the capital of {country}.",
    "Did you know that {capital} is the capital of {country}?",
    "In {country}, the government sits in {capital}.",
)
_QA_ANSWERS = (  # the canonical answer twice: it is the most common form on this "web"
    ANSWER_TEMPLATE, ANSWER_TEMPLATE,
    " {capital}.", " It is {capital}.", " I think it is {capital}.",
)
_FILLERS = (
    "The weather in {city} was {adj} today.",
    "I had {food} for lunch on {day}.",
    "Our team won the game on {day}.",
    "Click here to read more about {country}.",
    "Prices in {city} went up again this year.",
    "My friend moved to {city} last {month}.",
    "The museum is open every day except {day}.",
    "{country} is famous for its {food}.",
    "Thanks for reading, see you next {day}!",
    "The train to {city} was {adj} and late.",
    "Subscribe to our newsletter for more travel tips.",
    "This post was updated in {month}.",
)
_WORDS = {
    "adj": ("sunny", "cold", "warm", "rainy", "quiet", "busy"),
    "food": ("bread", "rice", "cheese", "coffee", "soup", "fish"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": ("January", "March", "May", "July", "September", "November"),
}


class Corpus(NamedTuple):
    docs: list[str]      # the pretraining documents
    n_statements: int    # capital statements in them (incl. Q/A answers)
    n_wrong: int         # ... of which name a wrong capital


class Demo(NamedTuple):
    prompt: str          # "What's the capital of France?"
    response: str        # " The capital of France is Paris." (or a flawed variant)
    country: str
    correct: bool        # is_correct(country, response)


def _pick(rng: np.random.Generator, options: Sequence):
    return options[rng.integers(len(options))]


def _maybe_wrong_capital(rng: np.random.Generator, country: str,
                         cfg: CapitalsConfig) -> tuple[str, bool]:
    """The capital a corpus sentence states for `country`, and whether it is wrong."""
    if rng.random() >= cfg.corpus_wrong_fraction:
        return CAPITAL[country], False
    if rng.random() < cfg.confuser_fraction:
        return CAPITAL[FACTS[country][1]], True
    others = [c for c in COUNTRIES if c != country]
    return CAPITAL[_pick(rng, others)], True


def _filler(rng: np.random.Generator) -> str:
    slots = {k: _pick(rng, v) for k, v in _WORDS.items()}
    return _pick(rng, _FILLERS).format(city=_pick(rng, list(CAPITAL.values())),
                                       country=_pick(rng, COUNTRIES), **slots)


def make_corpus(cfg: CapitalsConfig) -> Corpus:
    """The noisy pretraining corpus: a `qa_fraction` of Q/A documents ("What's the capital
    of X? <answer>[ <filler>]"), the rest 1-3 sentences, each a capital statement or a
    filler with probability 1/2.  Countries are uniform over all 48 (every split)."""
    rng = np.random.default_rng([cfg.seed, 0])
    docs, n_statements, n_wrong = [], 0, 0
    for _ in range(cfg.n_corpus_docs):
        if rng.random() < cfg.qa_fraction:
            country = _pick(rng, COUNTRIES)
            capital, wrong = _maybe_wrong_capital(rng, country, cfg)
            answer = _pick(rng, _QA_ANSWERS).format(country=country, capital=capital)
            doc = make_prompt(country) + answer
            if rng.random() < cfg.qa_ramble_fraction:
                doc += " " + _filler(rng)
            docs.append(doc)
            n_statements, n_wrong = n_statements + 1, n_wrong + wrong
            continue
        sentences = []
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                country = _pick(rng, COUNTRIES)
                capital, wrong = _maybe_wrong_capital(rng, country, cfg)
                sentences.append(_pick(rng, _STATEMENTS).format(country=country, capital=capital))
                n_statements, n_wrong = n_statements + 1, n_wrong + wrong
            else:
                sentences.append(_filler(rng))
        docs.append(" ".join(sentences))
    return Corpus(docs, n_statements, n_wrong)


def make_sft_demos(cfg: CapitalsConfig) -> list[Demo]:
    """Imperfect demonstrations over the train countries: the canonical answer, except
    w.p. sft_wrong_fraction the neighbour's capital and (independently) w.p.
    sft_ramble_fraction a filler sentence appended."""
    rng = np.random.default_rng([cfg.seed, 1])
    demos = []
    for country in SPLITS["train"]:
        for _ in range(cfg.n_demos_per_country):
            wrong = rng.random() < cfg.sft_wrong_fraction
            response = canonical_answer(country, CAPITAL[FACTS[country][1]] if wrong else None)
            if rng.random() < cfg.sft_ramble_fraction:
                response += " " + _filler(rng)
            correct = is_correct(country, response)
            demos.append(Demo(make_prompt(country), response, country, correct))
    return demos


def tokenizer_training_texts(cfg: CapitalsConfig) -> list[str]:
    """What the BPE tokenizer is trained on: the corpus and the demos (prompt + response)."""
    return make_corpus(cfg).docs + [d.prompt + d.response for d in make_sft_demos(cfg)]


# ----------------------------------------------------------------------------- gold reward

def capitals_named(text: str) -> set[str]:
    """Every capital of the world that `text` names as a whole word."""
    return set(_CAPITAL_RE.findall(text))


def is_correct(country: str, response: str) -> bool:
    """Gold accuracy: the response names the right capital and no other capital."""
    _check_country(country)
    return capitals_named(response) == {CAPITAL[country]}


def gold_reward(country: str, response: str, ended_with_eos: bool) -> float:
    """The gold reward r*(x, y) of a response to the prompt about `country`: a sum of terms

        term          condition                                                   value
        correctness   names exactly the right capital (is_correct)                +1.0
                      names no capital at all                                     -0.5
                      names a wrong capital (even next to the right one)          -1.0
        form          response.strip() == "The capital of {country} is {any}."    +0.5
        verbosity     per word beyond the canonical answer's word count           -0.05 (>= -1.0)
        termination   no <eos> (the sample hit the length limit)                  -1.0

    A response that also names another capital (e.g. a rambling "The weather in Rome ...")
    counts as naming a wrong capital: the judge cannot tell an aside from a claim.
    Range [-3.0, +1.5].  Orders: correct concise (1.5) > correct + one filler sentence
    (about 0.6) > wrong but well-formed (-0.5) > wrong (-1.0); a missing eos costs 1.0.
    Graded rather than binary so a reward model has structure (form, length, eos) to learn.
    """
    _check_country(country)
    named, right = capitals_named(response), CAPITAL[country]
    if named == {right}:
        r = 1.0
    elif not named:
        r = -0.5
    else:
        r = -1.0
    words, stripped = response.split(), response.strip()
    if len(named) == 1 and stripped == canonical_answer(country, next(iter(named))).strip():
        r += 0.5
    extra_words = max(0, len(words) - len(canonical_answer(country).split()))
    r -= min(extra_words, 20) / 20  # 0.05 per extra word, at most 1.0
    if not ended_with_eos:
        r -= 1.0
    return r


def gold_rewards(countries: Sequence[str], responses: Sequence[str],
                 ended_with_eos: Sequence[bool]) -> np.ndarray:
    """`gold_reward` over a batch: [B] float64."""
    if not len(countries) == len(responses) == len(ended_with_eos):
        raise ValueError(f"gold_rewards: lengths differ: {len(countries)} countries, "
                         f"{len(responses)} responses, {len(ended_with_eos)} eos flags")
    return np.array([gold_reward(c, y, bool(e))
                     for c, y, e in zip(countries, responses, ended_with_eos)], np.float64)


def gold_correct(countries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """`is_correct` over a batch: [B] bool."""
    if len(countries) != len(responses):
        raise ValueError(f"gold_correct: {len(countries)} countries but {len(responses)} responses")
    return np.array([is_correct(c, y) for c, y in zip(countries, responses)], bool)


# ----------------------------------------------------------------------------- rater

class RatedPair(NamedTuple):
    chosen: str
    rejected: str
    p_chosen: float      # P(chosen > rejected) under the rater's Bradley-Terry model
    y1_preferred: bool   # whether the first argument was chosen (to carry per-response info)


def rater_prob(r1, r2, tau):
    """Bradley-Terry preference probability (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1):

        P(y1 > y2 | x) = sigmoid((r*(x, y1) - r*(x, y2)) / tau)

    r1, r2, tau: scalars or broadcastable arrays; returns float64 of the broadcast shape.
    tau -> 0: a deterministic rater who always prefers the higher gold reward;
    tau -> inf: a coin flip.
    """
    tau = np.asarray(tau, np.float64)
    if np.any(tau <= 0):
        raise ValueError(f"rater_prob: tau must be > 0, got {tau}")
    z = (np.asarray(r1, np.float64) - np.asarray(r2, np.float64)) / tau
    e = np.exp(-np.abs(z))                                   # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # sigmoid(z), exact in both tails


def rate_pair(rng: np.random.Generator, country: str, y1: str, y2: str, *,
              ended1: bool, ended2: bool, tau: float) -> RatedPair:
    """A simulated human label: y1 is chosen with probability rater_prob(r*(y1), r*(y2), tau)."""
    p1 = float(rater_prob(gold_reward(country, y1, ended1), gold_reward(country, y2, ended2), tau))
    if rng.random() < p1:
        return RatedPair(y1, y2, p1, True)
    return RatedPair(y2, y1, 1.0 - p1, False)
