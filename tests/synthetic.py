"""Random-weight models with tokenizers trained in milliseconds: no network, no downloads.

For tests (a tiny RoBERTa exercising position offset 2 and pad id 1; a tiny model of every supported family,
saved as safetensors + tokenizer like a user's folder) and for benchmarks (the real roberta-base,
roberta-large, gpt2 and SmolLM2-135M shapes).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import (
    ByteLevelBPETokenizer,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerFast

from analysis.definitions import SEED_SENTENCE
from analysis.model.loaded import LoadedModel, wrap_model
from analysis.model.unembed import head_class

TRAINING_SENTENCES = [
    SEED_SENTENCE,
    "The cat sat on the mat, and the dog slept by the door.",
    "She said that it would rain in the morning; it did not.",
    "Transformers read every token of a sentence at once.",
    "Why does a period leap at layer five and snap back at layer six?",
    "We measured cosine similarity, rank and neighbour overlap for each token.",
]

ROBERTA_BASE_SHAPE = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
}
ROBERTA_LARGE_SHAPE = {
    **ROBERTA_BASE_SHAPE,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
}
TINY_SHAPE = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 66,
    "type_vocab_size": 1,
}


def bpe_tokenizer(sentences: list[str] = TRAINING_SENTENCES, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A RoBERTa-style tokenizer: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4, 'Ġ' space marker."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        sentences,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=512,
    )


def random_roberta(
    shape: dict, tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0, name: str = "random-roberta"
) -> LoadedModel:
    """A RobertaModel (no pooler) with random weights of `shape` and norms moved off 1 and 0, so that every term
    of the reference algebra is exercised. `vocab_size` defaults to the tokenizer's."""
    tokenizer = tokenizer or bpe_tokenizer()
    ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
    hf_model = random_hf_model("roberta", {**shape, **ids}, tokenizer, seed, add_pooling_layer=False)
    return wrap_model(hf_model, tokenizer, name)


def random_model(model_type: str, shape: dict, tokenizer: PreTrainedTokenizerFast, name: str) -> LoadedModel:
    """Any family's base model with random weights of `shape` (e.g. GPT2_SHAPE), wrapped for analysis."""
    return wrap_model(random_hf_model(model_type, shape, tokenizer), tokenizer, name)


def random_hf_model(
    model_type: str,
    shape: dict,
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    *,
    head: bool = False,
    **model_options,
) -> PreTrainedModel:
    """The base model of `model_type` (with its masked-LM or causal-LM head when `head`) with random weights of
    `shape` (vocab_size defaults to the tokenizer's) and perturbed norms (see `perturb_norms`)."""
    config = AutoConfig.for_model(model_type, **{"vocab_size": len(tokenizer), **shape})
    torch.manual_seed(seed)
    model_class = head_class(config) if head else AutoModel
    hf_model = model_class.from_config(config, attn_implementation="eager", **model_options)
    perturb_norms(hf_model, seed)
    return hf_model


def perturb_norms(hf_model: torch.nn.Module, seed: int = 0) -> None:
    """Move every norm's gain and bias (LayerNorm, RMSNorm) off their 1 and 0 initialisation, so that every term
    of the reference algebra is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in hf_model.modules():
            if isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
                for parameter in (getattr(module, "weight", None), getattr(module, "bias", None)):
                    if isinstance(parameter, torch.Tensor):
                        parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


GPT2_SHAPE = {"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024}
SMOLLM2_135M_SHAPE = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
}

_TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
_DECODER_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_ENCODER_IDS = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "cls_token_id": 0, "sep_token_id": 2}
_GEMMA = {**_TINY, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64, **_DECODER_IDS}
TINY_FAMILIES: dict[str, tuple[str, dict]] = {
    "bert": ("wordpiece", {**_TINY, "max_position_embeddings": 66, "type_vocab_size": 2}),
    "roberta": ("byte_level", {**_TINY, "max_position_embeddings": 66, **_ENCODER_IDS}),
    "xlm-roberta": ("sentencepiece", {**_TINY, "max_position_embeddings": 66, **_ENCODER_IDS}),
    "electra": ("wordpiece", {**_TINY, "embedding_size": 16, "max_position_embeddings": 66}),
    "albert": ("sentencepiece", {**_TINY, "embedding_size": 16, "max_position_embeddings": 66, **_ENCODER_IDS}),
    "distilbert": (
        "wordpiece",
        {"dim": 32, "n_layers": 3, "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 66},
    ),
    "mpnet": ("sentencepiece", {**_TINY, "max_position_embeddings": 66, **_ENCODER_IDS}),
    "deberta-v2": (
        "sentencepiece",
        {
            **_TINY,
            **_ENCODER_IDS,
            "relative_attention": True,
            "position_biased_input": False,
            "pos_att_type": ["p2c", "c2p"],
            "position_buckets": 16,
            "max_relative_positions": -1,
            "norm_rel_ebd": "layer_norm",
            "type_vocab_size": 0,
            "max_position_embeddings": 64,
        },
    ),
    "modernbert": (
        "byte_level",
        {**_TINY, **_ENCODER_IDS, "global_attn_every_n_layers": 2, "local_attention": 8, "max_position_embeddings": 64},
    ),
    "gpt2": ("byte_level_plain", {"n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64, **_DECODER_IDS}),
    "gpt_neox": ("byte_level_plain", {**_TINY, "rotary_pct": 0.25, "max_position_embeddings": 64, **_DECODER_IDS}),
    "llama": ("sentencepiece_bos", {**_TINY, "num_key_value_heads": 2, "max_position_embeddings": 64, **_DECODER_IDS}),
    "qwen2": ("byte_level_plain", {**_TINY, "num_key_value_heads": 2, "max_position_embeddings": 64, **_DECODER_IDS}),
    "mistral": (
        "sentencepiece_bos",
        {**_TINY, "num_key_value_heads": 1, "max_position_embeddings": 64, **_DECODER_IDS},
    ),
    "gemma": ("sentencepiece_bos", _GEMMA),
    "phi3": ("sentencepiece_bos", {**_TINY, "num_key_value_heads": 2, "max_position_embeddings": 64, **_DECODER_IDS}),
    "starcoder2": (
        "byte_level_plain",
        {**_TINY, "num_key_value_heads": 2, "max_position_embeddings": 64, **_DECODER_IDS},
    ),
    "stablelm": (
        "byte_level_plain",
        {**_TINY, "num_key_value_heads": 2, "max_position_embeddings": 64, **_DECODER_IDS},
    ),
    "opt": (
        "byte_level_plain",
        {
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "ffn_dim": 64,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": 64,
            **_DECODER_IDS,
        },
    ),
    "bloom": ("byte_level_plain", {"hidden_size": 32, "n_layer": 3, "n_head": 4, **_DECODER_IDS}),
    "gpt_neo": (
        "byte_level_plain",
        {
            "hidden_size": 32,
            "num_layers": 3,
            "num_heads": 4,
            "intermediate_size": 64,
            "window_size": 8,
            "attention_types": [[["global", "local"], 1], [["global"], 1]],
            "max_position_embeddings": 64,
            **_DECODER_IDS,
        },
    ),
    "gptj": (
        "byte_level_plain",
        {"n_embd": 32, "n_layer": 3, "n_head": 4, "rotary_dim": 4, "n_positions": 64, **_DECODER_IDS},
    ),
    "phi": ("byte_level_plain", {**_TINY, "max_position_embeddings": 64, **_DECODER_IDS}),
    "gemma2": ("sentencepiece_bos", {**_GEMMA, "sliding_window": 4, "final_logit_softcapping": 0.5}),
    "olmo": ("sentencepiece_bos", {**_TINY, "max_position_embeddings": 64, **_DECODER_IDS}),
    "falcon": (
        "byte_level_plain",
        {
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            **_DECODER_IDS,
        },
    ),
    "olmo2": ("sentencepiece_bos", {**_TINY, "max_position_embeddings": 64, **_DECODER_IDS}),
    "megatron-bert": ("wordpiece", {**_TINY, "max_position_embeddings": 66, "type_vocab_size": 2}),
    "xlm-roberta-xl": ("sentencepiece", {**_TINY, "max_position_embeddings": 66, **_ENCODER_IDS}),
    "gemma3_text": ("sentencepiece_bos", {**_GEMMA, "sliding_window": 4}),
}
"""model_type -> (tokenizer kind, config overrides) of a tiny random model of each supported family: ELECTRA and
ALBERT with a smaller embedding size (ALBERT's 3 layers share one block), DeBERTa in its v3 form (relative
positions only), ModernBERT with local attention, Llama and Mistral with grouped-query attention."""


def _fast(tokenizer: Tokenizer, max_length: int, **special: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **special)


def wordpiece_tokenizer(sentences: list[str] = TRAINING_SENTENCES, max_length: int = 512) -> PreTrainedTokenizerFast:
    """A BERT-style tokenizer: [PAD]=0 … [MASK]=4, `##` continuation pieces, [CLS] text [SEP]."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    tokenizer.decoder = decoders.WordPiece()
    return _fast(
        tokenizer, max_length, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip


def sentencepiece_tokenizer(
    sentences: list[str] = TRAINING_SENTENCES, max_length: int = 512, *, decoder: bool = False
) -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer (`▁` marks a word start). Encoder form: <s>=0, <pad>=1, </s>=2, <unk>=3,
    <mask>=4, `<s> text </s>`; decoder form (Llama): <pad>=0, <s>=1, </s>=2, <unk>=3, `<s> text`."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"] if decoder else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    bos, eos = ("<s>", specials.index("<s>")), ("</s>", specials.index("</s>"))
    single = "<s> $A" if decoder else "<s> $A </s>"
    tokenizer.post_processor = processors.TemplateProcessing(single=single, special_tokens=[bos, eos])
    extra = {} if decoder else {"mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
    return _fast(
        tokenizer, max_length, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", **extra
    )


def byte_level_tokenizer(sentences: list[str] = TRAINING_SENTENCES, max_length: int = 512) -> PreTrainedTokenizerFast:
    """A GPT-2-style tokenizer: byte-level pieces with `Ġ` for a leading space, no special tokens added;
    <|endoftext|>=0 … so that ids 0-2 exist for the configs' bos/eos/pad."""
    bpe = ByteLevelBPETokenizer()
    specials = ["<|endoftext|>", "<|bos|>", "<|eos|>"]
    bpe.train_from_iterator(sentences, vocab_size=400, min_frequency=1, special_tokens=specials, show_progress=False)
    return _fast(bpe._tokenizer, max_length, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|endoftext|>")


def tiny_model(
    model_type: str, seed: int = 0, *, head: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny random model of family `model_type` (see TINY_FAMILIES), with its prediction head when `head`, and
    its tokenizer."""
    kind, overrides = TINY_FAMILIES[model_type]
    max_length = 60
    tokenizer = {
        "wordpiece": lambda: wordpiece_tokenizer(max_length=max_length),
        "byte_level": lambda: bpe_tokenizer(),
        "byte_level_plain": lambda: byte_level_tokenizer(max_length=max_length),
        "sentencepiece": lambda: sentencepiece_tokenizer(max_length=max_length),
        "sentencepiece_bos": lambda: sentencepiece_tokenizer(max_length=max_length, decoder=True),
    }[kind]()
    tokenizer.model_max_length = max_length
    return random_hf_model(model_type, overrides, tokenizer, seed, head=head), tokenizer


def save_tiny_model(model_type: str, folder: Path, seed: int = 0, *, head: bool = False) -> Path:
    """Save a tiny random model of `model_type` (with its prediction head when `head`, as masked-LM and causal-LM
    checkpoints are published) as a user's folder would hold it: safetensors and a tokenizer."""
    hf_model, tokenizer = tiny_model(model_type, seed, head=head)
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
