"""Shared fixtures. No test may touch the network: the hub is switched off before transformers loads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

import analysis
from analysis.synthetic import TINY_SHAPE, random_roberta


@pytest.fixture(scope="session")
def minilm() -> analysis.EncoderModel:
    """The bundled real model (BERT architecture, 6 layers, hidden 384, vocab 30,522)."""
    return analysis.load_model(analysis.BUNDLED_MODEL)


@pytest.fixture(scope="session")
def tiny_roberta() -> analysis.EncoderModel:
    """A tiny random RobertaModel with a byte-level BPE tokenizer (position offset 2, pad id 1)."""
    return random_roberta(TINY_SHAPE, name="tiny-roberta")


@pytest.fixture(params=["minilm", "tiny_roberta"])
def encoder(request) -> analysis.EncoderModel:
    """Each test using this runs on the real BERT model and on the RoBERTa fixture."""
    return request.getfixturevalue(request.param)
