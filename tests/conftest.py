"""Shared fixtures. No test may touch the network: the hub is switched off before transformers loads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, not two threads each
    torch.set_num_threads(1)

import analysis
from tests.synthetic import TINY_SHAPE, random_roberta, save_tiny_model


@pytest.fixture(scope="session")
def minilm() -> analysis.LoadedModel:
    """The bundled real model (BERT architecture, 6 layers, hidden 384, vocab 30,522)."""
    return analysis.load_model(analysis.BUNDLED_MODEL)


@pytest.fixture(scope="session")
def tiny_roberta() -> analysis.LoadedModel:
    """A tiny random RobertaModel with a byte-level BPE tokenizer (position offset 2, pad id 1)."""
    return random_roberta(TINY_SHAPE, name="tiny-roberta")


@pytest.fixture(params=["minilm", "tiny_roberta"])
def lm(request) -> analysis.LoadedModel:
    """Each test using this runs on the real BERT model and on the RoBERTa fixture."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory):
    """(model_type, head) -> the folder of a tiny random model of that family, saved as safetensors + tokenizer
    like a user's checkpoint, with its masked-LM or causal-LM head when `head` (built once per session)."""
    folders = {}

    def folder(model_type: str, head: bool = False):
        if (model_type, head) not in folders:
            made = tmp_path_factory.mktemp(model_type + ("-head" if head else ""))
            folders[model_type, head] = save_tiny_model(model_type, made, head=head)
        return folders[model_type, head]

    return folder


STARTED_FIRST = ("test_ray_helpers.py", "test_browser.py", "test_hostile_corpora.py")
"""Files whose tests wait on other processes (Ray, a Streamlit server and a browser, racing sweeps): run first, so
the two workers (`pyproject.toml`) end together instead of one finishing them alone."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in STARTED_FIRST)  # stable: each file keeps its order
