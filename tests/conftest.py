"""Shared fixtures: the capitals world's default config and its tokenizer, built once."""

import pytest

from minirlhf.tokenizer import load_or_train_tokenizer
from minirlhf.worlds.capitals import CapitalsConfig, tokenizer_training_texts


@pytest.fixture(scope="session")
def capitals_cfg() -> CapitalsConfig:
    return CapitalsConfig()


@pytest.fixture(scope="session")
def tok(tmp_path_factory, capitals_cfg):
    """The BPE tokenizer trained on the default capitals world (in a temp dir)."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return load_or_train_tokenizer(path, tokenizer_training_texts(capitals_cfg))


def written_out_lm_loss(logits, tokens, loss_mask) -> float:
    """Next-token cross-entropy as a float64 loop: -(1/N) sum_{t>0, m_t=1} log softmax(z_{t-1})[x_t]
    (the PPO-ptx / DPO-ptx term, Ouyang et al. 2022 eq. 2, written out for the tests)."""
    import numpy as np
    z, x, m = np.asarray(logits, np.float64), np.asarray(tokens), np.asarray(loss_mask)
    terms = []
    for b in range(x.shape[0]):
        for t in range(1, x.shape[1]):
            if m[b, t]:
                zt = z[b, t - 1]
                terms.append(zt[x[b, t]] - zt.max() - np.log(np.exp(zt - zt.max()).sum()))
    return -float(np.mean(terms))
