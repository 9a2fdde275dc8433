"""Memory bounded by settings: a text is cut where the model's positions end or where one pass over it would
outgrow the memory budget (attention's quadratic cost included), whichever comes first; a sweep batches texts so
that no batch holds more than one text at that limit; `--max-tokens` sets the length instead, within positions."""

import json
import random

import pandas as pd
import pytest

import analysis
from analysis.__main__ import main
from analysis.capture.tokens import length_batches, tokenize
from analysis.corpus import engine
from analysis.model import budget
from analysis.model.budget import PassShape, pass_shape, text_budget
from tests.synthetic import random_hf_model, sentencepiece_tokenizer
from tests.test_sweep import texts_file

LONG_CONTEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32768,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


@pytest.fixture(scope="module")
def long_context_folder(tmp_path_factory):
    """A tiny Llama whose rotary positions allow 32,768 tokens, saved as a user's folder (tokenizer included)."""
    tokenizer = sentencepiece_tokenizer(decoder=True)
    tokenizer.model_max_length = 32768
    folder = tmp_path_factory.mktemp("long-context")
    random_hf_model("llama", LONG_CONTEXT, tokenizer, head=True).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def small_budget(monkeypatch):
    """A 32 MB text budget, so the memory limit falls far below the positions on a tiny model."""
    monkeypatch.setattr(budget, "TEXT_MEMORY_BYTES", 32 * 2**20)


@pytest.mark.parametrize("seed", range(20))
def test_tokens_within_is_the_longest_text_whose_pass_fits(seed):
    draw = random.Random(seed)
    shape = PassShape(draw.randint(1, 48), draw.choice([32, 768, 4096]), draw.randint(1, 32), draw.randint(64, 16384))
    budget_bytes = draw.randint(2**20, 2**36)
    tokens = shape.tokens_within(budget_bytes)
    assert shape.bytes_for(tokens) <= budget_bytes < shape.bytes_for(tokens + 1)
    assert shape.bytes_for(tokens, texts=3) == 3 * shape.bytes_for(tokens)


def test_the_budget_grows_with_the_model_and_is_read_from_its_config(minilm):
    assert text_budget(10**6) == budget.TEXT_MEMORY_BYTES
    assert text_budget(28 * 2**30) == 14 * 2**30
    shape = pass_shape(minilm.hf_model.config, minilm.num_layers, minilm.num_heads)
    assert shape == PassShape(layers=6, hidden=384, heads=12, inner=1536)
    assert minilm.memory_limit == shape.tokens_within(budget.TEXT_MEMORY_BYTES) > minilm.position_limit == 512
    assert minilm.max_tokens == 512 and not minilm.info.memory_limited


def test_a_long_context_model_cuts_texts_at_its_memory_limit_and_says_why(long_context_folder, small_budget):
    lm = analysis.load_model(str(long_context_folder))
    assert lm.position_limit == 32768
    assert lm.max_tokens == lm.memory_limit == lm.pass_shape.tokens_within(32 * 2**20) < 32768
    assert lm.pass_shape.bytes_for(lm.max_tokens) <= 32 * 2**20
    text = "the cat sat on the mat " * 5000  # 115 KB, 35,002 tokens: past the positions too
    result = analysis.analyze(lm, text)
    assert len(result.tokens) == lm.max_tokens and result.truncated
    assert lm.info.memory_limited and "memory budget; its positions allow 32,768" in lm.info.max_tokens_reason
    explicit = tokenize(lm, text, max_tokens=lm.max_tokens + 50)  # a user with the memory asks for more
    assert len(explicit) == lm.max_tokens + 50 and explicit.ids[: lm.max_tokens] == [
        int(i) for i in result.tokens["token_id"]
    ]
    assert len(tokenize(lm, text, max_tokens=10**9)) == 32768  # never past the positions


@pytest.mark.parametrize("seed", range(5))
def test_no_sweep_batch_holds_more_attention_than_one_text_at_the_limit(seed, long_context_folder, small_budget):
    lm = analysis.load_model(str(long_context_folder))
    draw = random.Random(seed)
    lengths = [draw.randint(3, lm.max_tokens) for _ in range(200)]
    square = engine._attention_budget(lm, with_demo=False)
    for batch in length_batches(lengths, 4096, square):
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest**2 <= lm.max_tokens**2
        assert len(batch) == 1 or len(batch) * longest <= 4096


def test_max_tokens_is_a_sweep_setting_checked_recorded_and_part_of_its_identity(tmp_path, minilm, capsys):
    path, out = texts_file(tmp_path, ["one two three four five six seven", "eight nine"]), tmp_path / "out"
    base = ["sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out", str(out), "--reference", "position"]
    assert main([*base, "--max-tokens", "600"]) == 1
    assert "max_tokens is 600, more than the 512 positions" in capsys.readouterr().err
    assert main([*base, "--max-tokens", "2"]) == 1
    assert "3 or more" in capsys.readouterr().err
    assert not out.exists()  # refused before the folder was claimed
    assert main([*base, "--max-tokens", "5"]) == 0
    assert "note: 1 texts were cut at 5 tokens" in capsys.readouterr().err
    rows = pd.read_parquet(out / "rows")
    assert rows.groupby("sentence_id")["position"].max().tolist() == [4, 3]  # [CLS] + 3 words + [SEP]; 4 tokens
    provenance = json.loads((out / "provenance.json").read_text())
    assert (provenance["max_tokens"], provenance["truncated_sentence_ids"]) == (5, [0])
    assert main([*base, "--max-tokens", "6"]) == 1
    assert "(max_tokens: 5 there, 6 now)" in capsys.readouterr().err
