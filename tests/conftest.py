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
