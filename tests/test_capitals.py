"""The capitals world: splits, corpus noise, demos, gold reward table and the rater."""

import numpy as np
import pytest

from minirlhf.worlds import capitals as cw
from minirlhf.worlds.capitals import CapitalsConfig

FR = "France"
GOOD = " The capital of France is Paris."
WRONG = " The capital of France is Berlin."
RAMBLE = " The capital of France is Paris. Our team won the game on Monday."  # 7 extra words


def test_facts_and_splits_are_disjoint_and_cover_the_world():
    assert 40 <= len(cw.COUNTRIES) <= 48
    assert len(set(cw.CAPITAL.values())) == len(cw.COUNTRIES)  # capitals identify countries
    train, held, ood = (set(cw.SPLITS[s]) for s in ("train", "heldout", "ood"))
    assert not (train & held) and not (train & ood) and not (held & ood)
    assert train | held | ood == set(cw.COUNTRIES)
    assert FR in train and cw.FACTS[FR][1] == "Germany"
    assert all(neighbour in cw.CAPITAL for _, neighbour in cw.FACTS.values())


def test_demo_answers_only_ever_name_train_capitals():
    """The train split is closed under confusion, so a demo's answer sentence (right, or wrong
    with the neighbour's capital) names a train capital; held-out/OOD capitals appear in demos
    only inside the rambling filler sentences."""
    train_caps = {cw.CAPITAL[c] for c in cw.SPLITS["train"]}
    assert all(cw.FACTS[c][1] in cw.SPLITS["train"] for c in cw.SPLITS["train"])
    demos = cw.make_sft_demos(CapitalsConfig())
    answers = [cw.capitals_named(d.response.split(".")[0]) for d in demos]   # first sentence
    assert all(len(a) == 1 and a <= train_caps for a in answers)
    assert any(not d.correct for d in demos)   # the wrong demos exist, and name train capitals


def test_config_rejects_bad_probabilities():
    with pytest.raises(ValueError, match=r"corpus_wrong_fraction: expected in \[0, 1\]"):
        CapitalsConfig(corpus_wrong_fraction=1.5)
    with pytest.raises(ValueError, match="rater_tau: expected > 0"):
        CapitalsConfig(rater_tau=0.0)


def test_prompts_parse_back_to_their_country():
    for split in ("train", "heldout", "ood"):
        prompts = cw.split_prompts(split)
        assert [cw.parse_country(p) for p in prompts] == list(cw.SPLITS[split])
    assert cw.split_prompts("train")[0] == "What's the capital of France?"
    assert cw.split_prompts("ood")[0].startswith("Which city is the capital of ")
    for bad in ("What's the capital of Atlantis?", "hello"):
        with pytest.raises(ValueError, match="not a capitals prompt"):
            cw.parse_country(bad)
    with pytest.raises(ValueError, match="expected one of"):
        cw.split_prompts("test")


def test_corpus_is_deterministic_and_noisy_at_the_configured_rate():
    cfg = CapitalsConfig(n_corpus_docs=2000)
    a, b = cw.make_corpus(cfg), cw.make_corpus(cfg)
    assert a == b
    assert cw.make_corpus(CapitalsConfig(n_corpus_docs=2000, seed=1)).docs != a.docs
    assert len(a.docs) == 2000
    # wrong statements ~ Binomial(n, 0.3): within 4 standard errors
    frac, se = a.n_wrong / a.n_statements, np.sqrt(0.3 * 0.7 / a.n_statements)
    assert abs(frac - 0.3) < 4 * se
    assert all(len(d.split()) < 40 for d in a.docs)  # short documents
    qa = [d for d in a.docs if d.startswith("What's the capital of ")]
    assert 0.25 < len(qa) / len(a.docs) < 0.35
    # the OOD template never occurs in the corpus or the demos
    texts = cw.tokenizer_training_texts(cfg)
    assert not any("Which city" in t for t in texts)


def test_corpus_counts_match_an_independent_recount():
    """Recount wrong Q/A answers by parsing them: the Q/A part of n_wrong is exact."""
    cfg = CapitalsConfig(n_corpus_docs=500, qa_fraction=1.0, qa_ramble_fraction=0.0)
    corpus = cw.make_corpus(cfg)
    wrong = 0
    for doc in corpus.docs:
        prompt, answer = doc.split("?", 1)
        wrong += not cw.is_correct(cw.parse_country(prompt + "?"), answer)
    assert corpus.n_statements == 500 and corpus.n_wrong == wrong


def test_sft_demos_are_imperfect_and_cover_only_train_countries():
    cfg = CapitalsConfig()
    demos = cw.make_sft_demos(cfg)
    assert demos == cw.make_sft_demos(cfg)
    assert len(demos) == 32 * cfg.n_demos_per_country
    assert {d.country for d in demos} == set(cw.SPLITS["train"])
    assert all(d.prompt == cw.make_prompt(d.country) for d in demos)
    acc = np.mean([d.correct for d in demos])
    assert 0.6 < acc < 0.9  # right only part of the time
    assert any(len(d.response.split()) > 8 for d in demos)  # some ramble
    assert all(d.correct == cw.is_correct(d.country, d.response) for d in demos)


def test_is_correct_needs_the_right_capital_and_no_other():
    assert cw.is_correct(FR, GOOD) and cw.is_correct(FR, " Paris.")
    assert not cw.is_correct(FR, WRONG)
    assert not cw.is_correct(FR, " Paris or Berlin.")
    assert not cw.is_correct(FR, " Parisian food.")  # whole words only
    assert cw.is_correct("Tunisia", " Tunis is in Tunisia.")
    np.testing.assert_array_equal(cw.gold_correct([FR, FR], [GOOD, WRONG]), [True, False])


def test_gold_reward_table_terms():
    r = lambda y, eos=True: cw.gold_reward(FR, y, eos)
    assert r(GOOD) == 1.5                         # +1 correct, +0.5 form
    assert r(WRONG) == -0.5                       # -1 wrong, +0.5 form
    assert r(" Paris.") == 1.0                    # correct, not the canonical sentence
    assert r(" I like cheese.") == -0.5           # names no capital
    assert r(" Berlin.") == -1.0
    assert r(GOOD + " The weather in Rome was cold.") < 0  # names a second capital: wrong
    assert r(RAMBLE) == pytest.approx(1.0 - 7 * 0.05)
    assert r(GOOD + " x" * 100) == pytest.approx(0.0)  # verbosity capped at -1
    assert r(GOOD, eos=False) == 0.5              # missing eos: -1


def test_gold_reward_orders_answers():
    r = lambda y, eos=True: cw.gold_reward(FR, y, eos)
    assert r(GOOD) > r(RAMBLE) > r(WRONG) > r(WRONG + " Our team won.")
    assert r(GOOD) > r(GOOD, eos=False)
    assert r(RAMBLE) > r(RAMBLE, eos=False)
    # any correct answer (with eos) beats any wrong one, however long
    assert r(GOOD + " x" * 100) > r(WRONG)
    np.testing.assert_allclose(cw.gold_rewards([FR, FR], [GOOD, WRONG], [True, False]), [1.5, -1.5])
    with pytest.raises(ValueError, match="lengths differ"):
        cw.gold_rewards([FR], [GOOD, WRONG], [True, True])
    with pytest.raises(ValueError, match="unknown country"):
        cw.gold_reward("Atlantis", GOOD, True)


def test_rater_prob_is_the_bradley_terry_sigmoid():
    dr = np.linspace(-30, 30, 13)
    for tau in (0.1, 0.5, 2.0):
        expected = 1.0 / (1.0 + np.exp(-dr / tau))  # written out, float64
        np.testing.assert_allclose(cw.rater_prob(dr, 0.0, tau), expected, rtol=1e-12, atol=1e-300)
    assert cw.rater_prob(1.0, 1.0, 0.5) == 0.5
    with pytest.raises(ValueError, match="tau must be > 0"):
        cw.rater_prob(1.0, 0.0, 0.0)


@pytest.mark.parametrize("y1, y2, e1, e2, tau", [
    (GOOD, RAMBLE, True, True, 0.5),     # dr = 0.85
    (GOOD, GOOD, True, False, 1.0),      # dr = 1.0 (eos only)
    (RAMBLE, WRONG, True, True, 2.0),    # dr = 1.15
    (WRONG, GOOD, True, True, 1.0),      # dr = -2
])
def test_rate_pair_empirical_rate_matches_sigmoid(y1, y2, e1, e2, tau):
    rng = np.random.default_rng(0)
    n = 4000
    p = float(cw.rater_prob(cw.gold_reward(FR, y1, e1), cw.gold_reward(FR, y2, e2), tau))
    picks = [cw.rate_pair(rng, FR, y1, y2, ended1=e1, ended2=e2, tau=tau) for _ in range(n)]
    rate = np.mean([pk.y1_preferred for pk in picks])
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n)
    for pk in picks[:50]:
        assert (pk.chosen, pk.rejected) == ((y1, y2) if pk.y1_preferred else (y2, y1))
        assert pk.p_chosen == pytest.approx(p if pk.y1_preferred else 1 - p)
