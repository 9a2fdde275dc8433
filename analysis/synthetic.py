"""Random-weight RoBERTa models with a byte-level BPE tokenizer trained in milliseconds.

For tests (a tiny model exercising RoBERTa's position offset 2 and pad id 1) and for benchmarks (the real
roberta-base and roberta-large shapes); no network, no downloads.
"""

from __future__ import annotations

import torch
from tokenizers import ByteLevelBPETokenizer, processors
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

from analysis.encoder import EncoderModel, wrap_model

SEED_SENTENCE = "Time flies like an arrow. Fruit flies like a banana."

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
) -> EncoderModel:
    """A RobertaModel with random weights of `shape`; LayerNorm gains and biases randomised too, so that
    every term of the reference algebra is exercised. `vocab_size` defaults to the tokenizer's."""
    tokenizer = tokenizer or bpe_tokenizer()
    config = RobertaConfig(
        **{"vocab_size": len(tokenizer), **shape},
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    hf_model = RobertaModel(config, add_pooling_layer=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in hf_model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.add_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return wrap_model(hf_model, tokenizer, name)
