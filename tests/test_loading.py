"""load_model: the bundled model offline, local folders, and a clear ValueError for every bad name."""

import json
import re

import pytest
import torch
from huggingface_hub import constants as hub_constants
from transformers import MambaConfig, MambaModel

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.model import loading
from tests.synthetic import TINY_SHAPE, bpe_tokenizer, random_roberta, tiny_model


def test_bundled_model_loads_offline_with_its_sizes(minilm):
    assert minilm.info == analysis.ModelInfo(
        name=analysis.BUNDLED_MODEL,
        architecture="BertModel",
        family="BERT-style post-LayerNorm encoder",
        block="post_ln",
        causal=False,
        layers=6,
        hidden_size=384,
        heads=12,
        vocab_size=30522,
        max_tokens=512,
        position_limit=512,
        parameters=22_565_376,  # the published 22.71M (embeddings 11.92M, 6 blocks x 1.77M) without the pooler's
        # 0.15M: loaded in its masked-LM form, which has none, since no stage reads it
    )
    assert not minilm.hf_model.training
    assert minilm.hf_model.config._attn_implementation == "eager"
    assert minilm.structure.embeddings.position_offset == 0


def test_a_model_is_loaded_once_per_process():
    first = analysis.load_model(analysis.BUNDLED_MODEL)
    assert analysis.load_model("all-MiniLM-L6-v2") is first
    assert analysis.load_model(" sentence-transformers/all-MiniLM-L6-v2 ") is first


def test_a_saved_roberta_folder_given_as_a_path_loads_and_gives_the_same_results(tmp_path, tiny_roberta):
    tiny_roberta.hf_model.save_pretrained(tmp_path / "tiny")
    tiny_roberta.tokenizer.save_pretrained(tmp_path / "tiny")
    loaded = analysis.load_model(tmp_path / "tiny")
    assert loaded.structure.embeddings.position_offset == 2
    assert loaded.architecture == "RobertaModel"
    expected = analysis.analyze(tiny_roberta, SEED_SENTENCE)
    got = analysis.analyze(loaded, SEED_SENTENCE)
    # The same weights (safetensors round-trip float32 exactly) through the same code path: the same bits.
    assert got.metrics["rank"].equals(expected.metrics["rank"])
    assert got.metrics["cosine"].equals(expected.metrics["cosine"])


@pytest.fixture
def three_tiny_folders(tmp_path):
    """Three saved tiny RoBERTa folders, and the model cache restored to its defaults afterwards."""
    model = random_roberta(TINY_SHAPE, seed=3)
    for name in ("a", "b", "c"):
        model.hf_model.save_pretrained(tmp_path / name)
        model.tokenizer.save_pretrained(tmp_path / name)
    yield [str(tmp_path / name) for name in ("a", "b", "c")]
    analysis.configure_model_cache(max_models=1, memory_budget_bytes=None)
    analysis.release_models()


def test_the_cache_is_bounded_by_count_least_recently_used_first(three_tiny_folders):
    a, b, c = three_tiny_folders
    analysis.configure_model_cache(max_models=2)
    first = analysis.load_model(a)
    analysis.load_model(b)
    assert analysis.load_model(a) is first  # resident: served, and now the most recently used
    analysis.load_model(c)
    assert analysis.resident_models() == [a, c]  # b was the least recently used
    analysis.configure_model_cache(max_models=1)
    analysis.load_model(b)
    assert analysis.resident_models() == [b]
    analysis.release_models()
    assert analysis.resident_models() == []


def test_the_cache_releases_models_that_would_pass_the_memory_budget(three_tiny_folders):
    a, b, _ = three_tiny_folders
    one_model = analysis.load_model(a).parameter_bytes
    analysis.configure_model_cache(max_models=5, memory_budget_bytes=int(1.5 * one_model))
    analysis.load_model(b)
    assert analysis.resident_models() == [b]  # two would not fit: a was released before b loaded
    analysis.configure_model_cache(max_models=5, memory_budget_bytes=3 * one_model)
    analysis.load_model(a)
    assert analysis.resident_models() == [b, a]
    analysis.configure_model_cache(max_models=5, memory_budget_bytes=one_model // 2)
    assert analysis.resident_models() == [a]  # a lower budget releases at once, but never the last model
    assert analysis.load_model(a) is analysis.load_model(a)  # which then stays loaded, not reloaded per call


def test_a_bad_cache_bound_is_refused():
    with pytest.raises(ValueError, match="max_models must be a whole number of at least 1"):
        analysis.configure_model_cache(max_models=0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "No model given"),
        ("   ", "No model given"),
        ("https://huggingface.co/roberta-base", "is a URL; type the hub id instead"),
        ("huggingface.co/roberta-base/../x", "neither an existing folder nor a hub id"),
        ("org/../../etc/passwd", "neither an existing folder nor a hub id"),
        ("roberta base!", "neither an existing folder nor a hub id"),
        ("/no/such/model/folder", "No folder at '/no/such/model/folder'"),
        ("roberta-base", "not in the local Hugging Face cache and the hub is switched off"),
        ("someone/no-such-model-xyz", "bundled model 'sentence-transformers/all-MiniLM-L6-v2' always works offline"),
    ],
)
def test_bad_model_names_give_an_actionable_value_error(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        analysis.load_model(name)


def test_a_relative_path_may_not_escape_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "inside").mkdir()
    monkeypatch.chdir(tmp_path / "inside")
    with pytest.raises(
        analysis.ModelLoadError, match="leads outside the current folder; give the model folder's absolute"
    ):
        analysis.load_model("../")


def test_a_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(
        analysis.ModelLoadError, match=re.escape("no .safetensors weights; Token Trails never loads pickled")
    ):
        analysis.load_model(str(tmp_path))


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(analysis.ModelLoadError, match=re.escape("has no config.json")):
        analysis.load_model(str(tmp_path))


def test_an_unsupported_architecture_is_named_with_what_was_missing(tmp_path):
    """Mamba is in no family table and has no attention to read: refused, saying what was not found."""
    config = MambaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, state_size=4)
    MambaModel(config).save_pretrained(tmp_path)
    bpe_tokenizer().save_pretrained(tmp_path)
    message = "The architecture MambaModel is not supported: no module of its blocks returned attention weights"
    with pytest.raises(analysis.UnsupportedModelError, match=re.escape(message)):
        analysis.load_model(str(tmp_path))


def test_an_unreachable_hub_fails_fast_with_advice(monkeypatch):
    """With offline mode off, a hub that does not answer (a closed loopback port here) is reported at once."""
    monkeypatch.setattr(hub_constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    assert not loading.hub_reachable(timeout=1)
    with pytest.raises(analysis.ModelLoadError, match=re.escape("cannot be reached: connect to the internet")):
        analysis.load_model("roberta-large")


def test_download_reports_byte_progress_and_fetches_only_safe_files(monkeypatch):
    calls, seen = [], []

    def fake_snapshot_download(repo_id, allow_patterns, tqdm_class):
        calls.append((repo_id, allow_patterns))
        bar = tqdm_class(total=300, unit="B", desc="Downloading bytes", name="huggingface_hub.snapshot_download")
        bar.update(100)
        bar.update(200)
        bar.close()

    monkeypatch.setattr(loading, "snapshot_download", fake_snapshot_download)
    loading.download("roberta-base", lambda desc, done, total: seen.append((desc, done, total)))
    assert seen == [("Downloading bytes", 100, 300), ("Downloading bytes", 300, 300)]
    ((repo, patterns),) = calls
    assert repo == "roberta-base" and "*.safetensors" in patterns
    assert not any(pattern.endswith((".bin", ".pt", ".pkl", ".h5", ".msgpack")) for pattern in patterns)


def test_only_uncached_hub_ids_need_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty Hugging Face cache
    assert loading.needs_download("roberta-base")
    snapshot = tmp_path / "models--roberta-base" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--roberta-base" / "refs").mkdir()
    (tmp_path / "models--roberta-base" / "refs" / "main").write_text("abc123")
    assert not loading.needs_download("roberta-base")
    assert not loading.needs_download(analysis.BUNDLED_MODEL)
    with pytest.raises(analysis.ModelLoadError):
        loading.needs_download("https://x.org/m")


def test_model_size_from_config_matches_the_loaded_weights(minilm, tiny_roberta, tmp_path):
    """The size counted on the meta device is what loading allocates: the model in its masked-LM form, whose head
    (dense, LayerNorm and output bias; the output matrix is the tied embedding table) is built before the
    checkpoint says whether it holds one."""
    hidden, vocabulary = 384, 30522
    head = hidden * hidden + hidden + 2 * hidden + vocabulary
    actual = 4 * (sum(p.numel() for p in minilm.hf_model.parameters()) + head)
    assert loading.model_bytes(analysis.BUNDLED_MODEL) == actual
    tiny_roberta.hf_model.save_pretrained(tmp_path)
    tiny = 4 * sum(p.numel() for p in tiny_roberta.hf_model.parameters())  # built without a pooler
    tiny_head = 4 * (32 * 32 + 32 + 2 * 32 + tiny_roberta.vocab_size)
    assert loading.model_bytes(str(tmp_path)) == tiny + tiny_head
    assert loading.model_bytes("roberta-large") is None  # not on this machine: unknown, not guessed


def test_a_hub_repository_with_only_pickled_weights_is_refused(tmp_path, monkeypatch):
    """A decoder repository in the local hub cache offering only pytorch_model.bin: refused, never unpickled."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    hf_model, tokenizer = tiny_model("gpt2")
    repo = tmp_path / "models--someone--pickled-gpt"
    snapshot = repo / "snapshots" / "abc123"
    hf_model.config.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    torch.save(hf_model.state_dict(), snapshot / "pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    message = "has no model.safetensors (or model.safetensors.index.json); Token Trails reads only safetensors"
    with pytest.raises(analysis.ModelLoadError, match=re.escape(message)):
        analysis.load_model("someone/pickled-gpt")
