"""Hostile model folders: each is refused by the one loading path (API, CLI and app alike) with one line that
says what is wrong and what to do; the ones that would allocate more than their files hold, or read damaged
files, are refused before any weight is allocated. Never a half-loaded model, never a traceback."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

import analysis
from analysis.__main__ import main
from analysis.model import checkpoint, loading
from analysis.model.checkpoint import WEIGHTS_FILE
from tests.synthetic import tiny_model


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def edit_weights(folder: Path, change) -> None:
    weights = load_file(folder / WEIGHTS_FILE)
    save_file(change(weights), folder / WEIGHTS_FILE, metadata={"format": "pt"})


def huge_config(folder: Path) -> None:
    """A config declaring a 1.5M x 1024 embedding table (6 GB) beside one unrelated tensor."""
    edit_config(folder, vocab_size=1_500_000, hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
    save_file({"unrelated": torch.zeros(3)}, folder / WEIGHTS_FILE)


def without_layer_one(folder: Path) -> None:
    edit_weights(folder, lambda weights: {k: v for k, v in weights.items() if "layer.1." not in k})


def missing_beside_a_head(folder: Path) -> None:
    """Layer 1's weights gone, and a head as large beside them: the file holds enough numbers, not the right ones."""
    edit_weights(
        folder,
        lambda weights: {
            **{k: v for k, v in weights.items() if "layer.1." not in k},
            "classifier.dense.weight": torch.zeros(sum(v.numel() for k, v in weights.items() if "layer.1." in k)),
        },
    )


def truncated(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def no_tokenizer(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name not in ("config.json", WEIGHTS_FILE):
            path.unlink()


def small_embedding_table(folder: Path) -> None:
    """The embedding table cut to 50 rows (config and weights agree); the tokenizer still has 400 ids."""
    edit_config(folder, vocab_size=50)
    edit_weights(folder, lambda w: {k: v[:50] if k.endswith("word_embeddings.weight") else v for k, v in w.items()})


def two_positions(folder: Path) -> None:
    """A position table of 2 rows, which RoBERTa's offset of 2 leaves no room in (config and weights agree)."""
    edit_config(folder, max_position_embeddings=2)
    edit_weights(folder, lambda w: {k: v[:2] if "position_embeddings" in k else v for k, v in w.items()})


def wider_file_than_config(folder: Path) -> None:
    """The config says 2 positions; the file holds 66 rows."""
    edit_config(folder, max_position_embeddings=2)


def renamed_weight(folder: Path) -> None:
    """Every weight present, plus one under the base model's name that the architecture does not have."""
    edit_weights(folder, lambda weights: {**weights, "encoder.layer.9.attention.extra.weight": torch.zeros(4)})


def edit_header(folder: Path, change) -> None:
    """Rewrite the weights file's safetensors header (its JSON table) with `change(header)`, keeping the bytes."""
    data = (folder / WEIGHTS_FILE).read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    change(header)
    encoded = json.dumps(header).encode()
    (folder / WEIGHTS_FILE).write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + length :])


def first_entry(header: dict) -> dict:
    return header[next(name for name in header if name != "__metadata__")]


def sharded_without_metadata(folder: Path) -> None:
    """The weights as one shard of an index whose "metadata" table is missing."""
    (folder / WEIGHTS_FILE).rename(folder / "model-00001-of-00001.safetensors")
    names = load_file(folder / "model-00001-of-00001.safetensors").keys()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(names, "model-00001-of-00001.safetensors")})
    )


CASES = {
    "huge config, one unrelated tensor": (huge_config, "hold 3 numbers but its config describes a model of", True),
    "a safetensors file with no model tensors": (
        lambda f: save_file({"something.else": torch.zeros(3)}, f / WEIGHTS_FILE),
        "weights are missing or smaller than the config says", True,
    ),
    "one layer's weights missing": (without_layer_one, "weights are missing or smaller than the config says", True),
    "weights missing beside a head": (
        missing_beside_a_head, "lacks 16 weights (encoder.layer.1.attention.output.LayerNorm.bias, "
        "encoder.layer.1.attention.output.LayerNorm.weight and 14 more): they would be random", False,
    ),
    "truncated weights": (truncated, "is damaged: it is truncated, holding", True),
    "zero-byte weights": (lambda f: (f / WEIGHTS_FILE).write_bytes(b""), "is damaged (0 bytes, no valid header)", True),
    "garbage weights": (
        lambda f: (f / WEIGHTS_FILE).write_bytes(b"\x00garbage" * 1000), "is damaged (8,000 bytes, no valid header)",
        True,
    ),
    "a config naming its own code": (
        lambda f: edit_config(f, auto_map={"AutoModel": "modeling_x.XModel"}),
        "needs its own Python code to load (auto_map in its config.json); Token Trails never runs", True,
    ),
    "an unknown model type": (
        lambda f: edit_config(f, model_type="custom-x"), "declares the model type 'custom-x', which transformers", True,
    ),
    "weights wider than the config": (
        wider_file_than_config,
        "has 1 weight of another shape than its config.json describes (embeddings.position_embeddings.weight is "
        "[66, 32] in the file, [2, 32] by the config)", False,
    ),
    "a weight the architecture lacks": (
        renamed_weight, "has 1 weight its architecture does not know (encoder.layer.9.attention.extra.weight)", False,
    ),
    "no tokenizer": (no_tokenizer, "has no tokenizer (tokenizer.json, vocab.txt, vocab.json, …): save it", True),
    "a tokenizer larger than the table": (
        small_embedding_table, "has ids up to 399 but the embedding table has 50 rows", False,
    ),
    "a position table too small for any text": (two_positions, "has room for 0 tokens (max_position_embeddings", False),
    "a width given as text": (lambda f: edit_config(f, hidden_size="64"),
                              "gives hidden_size as '64': it must be a whole number of at least 1", True),
    "a width with a fraction": (lambda f: edit_config(f, hidden_size=64.5),
                                "gives hidden_size as 64.5: it must be a whole number", True),
    "no activation": (lambda f: edit_config(f, hidden_act=None), "gives hidden_act as None: it must name an", True),
    "an epsilon given as text": (lambda f: edit_config(f, layer_norm_eps="abc"),
                                 "gives layer_norm_eps as 'abc': it must be a finite number", True),
    "no attention heads": (lambda f: edit_config(f, num_attention_heads=0),
                           "gives num_attention_heads as 0: it must be a whole number of at least 1", True),
    "a negative vocabulary": (lambda f: edit_config(f, vocab_size=-5), "gives vocab_size as -5", True),
    "an empty vocabulary": (lambda f: edit_config(f, vocab_size=0), "gives vocab_size as 0", True),
    "heads that do not divide the width": (lambda f: edit_config(f, num_attention_heads=5),
                                           "splits a width of 32 into 5 heads, which does not divide it", True),
    "100,000 layers": (lambda f: edit_config(f, num_hidden_layers=100_000),
                       "(100,000 layers of width 32): weights are missing or smaller than the config says", True),
    "an unknown dtype in the header": (lambda f: edit_header(f, lambda h: first_entry(h).update(dtype="F33")),
                                       "the unknown dtype 'F33'", True),
    "negative offsets in the header": (
        lambda f: edit_header(f, lambda h: first_entry(h).update(data_offsets=[-8, 0])),
        "the bytes -8 to 0", True,
    ),
    "a shape larger than its bytes": (
        lambda f: edit_header(f, lambda h: first_entry(h).update(shape=[4000, 32])),
        "but a F32 tensor of shape [4000, 32] needs 512,000", True,
    ),
    "an index without its metadata": (sharded_without_metadata, "is damaged (it has no 'metadata' entry)", True),
    "a tokenizer.json that is a list": (lambda f: (f / "tokenizer.json").write_text("[1, 2, 3]"),
                                        "The tokenizer.json of", True),
    "NaN weights": (lambda f: edit_weights(f, lambda w: {k: torch.full_like(v, float("nan")) for k, v in w.items()}),
                    "holds non-finite weights (NaN or infinity)", False),
}  # fmt: skip


def forbid_allocation(monkeypatch) -> None:
    """Fail the test if any model class (base, masked-LM or causal-LM) starts loading weights."""
    for model_class in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        monkeypatch.setattr(model_class, "from_pretrained", lambda *a, **k: pytest.fail("weights were allocated"))


@pytest.fixture
def hostile_folder(family_folder, tmp_path):
    def build(damage) -> Path:
        folder = tmp_path / "model"
        shutil.copytree(family_folder("roberta"), folder)
        damage(folder)
        return folder

    return build


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_folder_is_refused_in_one_line_and_before_allocating_where_it_can_be(
    case, hostile_folder, monkeypatch, capsys
):
    damage, message, before_allocating = CASES[case]
    folder = hostile_folder(damage)
    if before_allocating:
        forbid_allocation(monkeypatch)
    with pytest.raises(analysis.ModelLoadError) as refused:
        analysis.load_model(folder)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(folder) not in analysis.resident_models()
    assert main(["export", "--model", str(folder), "--text", "Time flies.", "--out", str(folder / "out")]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1] == f"python -m analysis: error: {refused.value}" and "Traceback" not in "".join(error)
    assert not (folder / "out").exists()


def test_a_masked_lm_checkpoint_loads_its_base_model_exactly(family_folder, tmp_path):
    """A checkpoint saved with its MLM head (how roberta-base is published): the head's weights are not the base
    model's and the pooler is never read, so it loads; every base weight equals the file's."""
    base, tokenizer = tiny_model("roberta")
    with_head = AutoModelForMaskedLM.from_config(base.config)
    with_head.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    stored = load_file(tmp_path / WEIGHTS_FILE)
    assert any(key.startswith("lm_head.") for key in stored) and not any("pooler" in key for key in stored)
    lm = analysis.load_model(tmp_path)
    loaded = lm.hf_model.state_dict()
    for key, value in stored.items():
        if key.startswith("roberta."):
            torch.testing.assert_close(loaded[key.removeprefix("roberta.")], value, rtol=0, atol=0)


def test_a_model_over_the_limit_or_the_free_memory_is_refused_before_allocating(family_folder, monkeypatch):
    folder = family_folder("roberta")
    analysis.release_models()
    forbid_allocation(monkeypatch)
    size = loading.parameter_bytes(loading.AutoConfig.from_pretrained(folder))
    with pytest.raises(analysis.ModelLoadError, match=re.escape("over this deployment's limit of 0.00 GB")):
        analysis.load_model(folder, max_bytes=size - 1)
    monkeypatch.setattr(checkpoint, "available_memory_bytes", lambda: size // 2)
    with pytest.raises(analysis.ModelLoadError, match=r"needs about 0\.00 GB in float32 but only 0\.00 GB of memory"):
        analysis.load_model(folder)
    with pytest.raises(analysis.ModelLoadError, match="of memory is free"):
        loading.check_model_size(str(folder), max_bytes=None)


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="MemAvailable is read from Linux's /proc/meminfo")
def test_the_free_memory_is_read_on_linux():
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert checkpoint.available_memory_bytes() // 2**20 == pytest.approx(
        int(meminfo["MemAvailable"].split()[0]) // 1024, abs=512
    )  # MiB, read a moment apart


@pytest.mark.parametrize("case", ["no tokenizer", "truncated weights", "weights wider than the config"])
def test_the_app_shows_the_refusal_as_one_message(case, hostile_folder):
    from tests.test_app import TRAJECTORIES, open_app

    damage, message, _ = CASES[case]
    app = open_app(TRAJECTORIES, model=str(hostile_folder(damage)))
    assert not app.exception
    shown = " ".join(element.value for element in app.error).replace("\\", "")
    assert message in shown and not app.get("vega_lite_chart")


def test_one_exception_type_says_this_model_cannot_be_used():
    """A script catches every refusal of a model or folder in one place: ModelLoadError, a ValueError
    (UnsupportedModelError, for a structure Token Trails cannot read, is one too)."""
    assert issubclass(analysis.UnsupportedModelError, analysis.ModelLoadError)
    assert issubclass(analysis.ModelLoadError, ValueError)
