"""Word classes of tokens: function word, content word, punctuation, special token.

Sub-word pieces are joined into the word they spell (BERT's `##` pieces, RoBERTa's pieces after a
`Ġ`-marked start) by their character spans, and the whole word is looked up in a closed-class English list.
"""

from __future__ import annotations

import pandas as pd

FUNCTION_WORDS = frozenset(
    """
    a an the this that these those some any each every either neither no all both half several many much
    more most few fewer less least other another such what which whose whatever whichever i me my mine
    myself you your yours yourself yourselves he him his himself she her hers herself it its itself we us
    our ours ourselves they them their theirs themselves one ones oneself who whom whoever somebody someone
    something anybody anyone anything nobody none nothing everybody everyone everything about above across
    after against along amid among around as at before behind below beneath beside besides between beyond
    but by despite down during except for from in inside into like near of off on onto opposite out outside
    over past per round since than through throughout till to toward towards under underneath unlike until
    up upon via with within without and or nor so yet because although though while whereas if unless
    whether once whenever wherever where when why how then there here be am is are was were been being have
    has had having do does did doing done will would shall should can could may might must ought need dare
    not n't no yes i'm i've i'll i'd you're you've you'll you'd he's he'll he'd she's she'll she'd it's
    it'll we're we've we'll we'd they're they've they'll they'd that's there's here's what's who's let's
    isn't aren't wasn't weren't haven't hasn't hadn't don't doesn't didn't won't wouldn't shan't shouldn't
    can't cannot couldn't mayn't mightn't mustn't needn't 's 've 'll 'd 're 'm just only also even too very
    quite rather almost again ever never always often still already
    """.split()
)

RIGHT_QUOTE = "\u2019"


def _has_alnum(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def word_classes(tokens: pd.DataFrame) -> pd.Series:
    """The class of each token, from `AnalysisResult.tokens` (text, special, char_start, char_end) → `[tokens]`.

    Consecutive pieces with touching character spans and letters or digits form one word; the word, not the
    piece, decides function vs content. Apostrophes join words ("don't").
    """
    classes: list[str] = [""] * len(tokens)
    words: list[list[int]] = []
    previous_end = None
    for row in tokens.itertuples():
        if row.special:
            classes[row.Index] = "special"
            previous_end = None
            continue
        text = row.text.strip()
        joins_word = _has_alnum(text) or text in ("'", RIGHT_QUOTE)
        if not joins_word:
            classes[row.Index] = "punctuation"
            previous_end = None
            continue
        if words and previous_end is not None and row.char_start == previous_end and not row.text[:1].isspace():
            words[-1].append(row.Index)
        else:
            words.append([row.Index])
        previous_end = row.char_end
    for word in words:
        spelled = "".join(tokens.at[i, "text"] for i in word).strip().lower().replace(RIGHT_QUOTE, "'")
        kind = "function" if spelled in FUNCTION_WORDS else "content"
        for i in word:
            classes[i] = kind
    return pd.Series(classes, index=tokens.index, name="word_class")
