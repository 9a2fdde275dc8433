"""Word classes join sub-word pieces into words (BERT ## and RoBERTa Ġ) before the closed-class lookup."""

import analysis
from analysis.wordclass import FUNCTION_WORDS, word_classes

TEXT = "Time flies like an arrow. I don't know, it's unbelievable!"


def classes_by_text(lm):
    result = analysis.analyze(lm, TEXT, top_k=1, overlap_n=1)
    tokens = result.tokens.assign(word_class=word_classes(result.tokens))
    return tokens


def test_word_classes_on_the_bundled_bert_tokenizer(minilm):
    tokens = classes_by_text(minilm)
    by_text = dict(zip(tokens["text"], tokens["word_class"], strict=False))
    assert by_text["[CLS]"] == by_text["[SEP]"] == "special"
    assert by_text["like"] == by_text["an"] == by_text["I"] == "function"
    assert by_text["flies"] == by_text["arrow"] == by_text["know"] == "content"
    assert by_text["."] == by_text[","] == by_text["!"] == "punctuation"
    dont = tokens[(tokens["char_start"] >= TEXT.index("don't")) & (tokens["char_end"] <= TEXT.index(" know"))]
    assert len(dont) > 1 and (dont["word_class"] == "function").all()  # don ' t -> "don't"


def test_roberta_pieces_take_the_class_of_their_word(tiny_roberta):
    tokens = classes_by_text(tiny_roberta)
    inside = (tokens["char_start"] >= TEXT.index("unbelievable")) & (tokens["char_end"] <= TEXT.index("!"))
    word = tokens[inside & (tokens["char_end"] > tokens["char_start"])]  # not the tokenizer's bare-space piece
    assert len(word) > 1, "the fixture tokenizer splits this unseen word"
    assert (word["word_class"] == "content").all()
    assert tokens["token"].iloc[0] == "<s>" and tokens["word_class"].iloc[0] == "special"
    like = tokens[tokens["token"] == "Ġlike"]
    assert len(like) >= 1 and (like["word_class"] == "function").all()


def test_the_closed_class_list_is_lower_case_english():
    assert {"the", "of", "and", "is", "not", "don't"} <= FUNCTION_WORDS
    assert all(word == word.lower() for word in FUNCTION_WORDS)
    assert not {"time", "arrow", "banana", "flies"} & FUNCTION_WORDS
