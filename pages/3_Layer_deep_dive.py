"""Layer deep dive: is the spike real, which tokens leap in rank at a layer and fall back at the next, and why."""

import streamlit as st

from analysis.charts import comparison_chart, corpus_chart, heatmap, norms_chart, spike_chart, verdict_chart
from analysis.reports import (
    attention_pattern,
    baseline_table,
    layer_report,
    layernorm_table,
    opening_layer,
    rogue_table,
    token_labels,
)
from analysis.sentences import corpus_sentences
from analysis.spikes import SPIKE_DEFINITION, spike_scores
from analysis.texts import FORMATS, texts_from_upload
from analysis.verdict import VERDICT_COLUMNS, verdict_methods, verdict_summary
from dashboard import show
from dashboard.cache import (
    cached_background,
    cached_corpus,
    cached_heads,
    cached_original_demo,
    cached_verdict,
    view_analysis,
)
from dashboard.controller import open_page
from dashboard.settings import settings
from dashboard.view import update_view
from dashboard.widgets import bind, run_once_button, with_progress

MAX_PATTERN_TOKENS = 96  # a 96 x 96 heatmap stays readable and light; longer texts are cut, and the caption says so

context = open_page("Layer deep dive")
result, view = context.result, context.view
n_layers, n_heads = context.info.layers, context.info.heads
labels = token_labels(result)
sentences = corpus_sentences()

st.header("Layer deep dive")
st.subheader("Is the spike real?")
st.caption(
    show.literal(
        f"Over {len(sentences)} varied sentences shipped with Token Trails: the share of function and content "
        f"words that spike at each layer in {view.model} (stage {view.stage}, reference {view.reference}), under the "
        "original demo's computation and under each geometry of the exact one, with 95% Wilson intervals. A spike "
        "that the geometry controls remove comes from anisotropy or a few rogue dimensions, not from the tokens."
    )
)
methods = verdict_methods(context.capabilities.original_demo is None)
st.caption(" ".join(f"**{name}**: {show.literal(meaning)}." for name, meaning in methods.items()))
verdict_key = ("verdict", view.model, view.stage, view.reference, view.rogue_k)
if run_once_button(verdict_key, f"Run the verdict ({len(sentences)} sentences x {len(methods)} methods)"):
    verdict = with_progress(
        "Running the verdict…",
        "Sentence",
        lambda on_progress: cached_verdict(
            view.model, view.stage, view.reference, view.rogue_k, _on_progress=on_progress
        ),
    )
    st.info(show.literal(verdict_summary(verdict)), icon=":material/fact_check:")
    show.chart(verdict_chart(verdict), "spike_verdict", key="verdict_chart")
    show.table(verdict, "spike_verdict", key="verdict_table", column_help=VERDICT_COLUMNS)

top, why = opening_layer(result.metrics)
if view.layer >= n_layers or view.head >= n_heads:
    update_view(layer=-1 if view.layer >= n_layers else view.layer, head=0 if view.head >= n_heads else view.head)
    st.info(
        show.literal(f"The link's layer or head does not exist in this model ({n_layers} layers, {n_heads} heads).")
    )
layer = view.layer if 0 <= view.layer < n_layers else top
head = min(view.head, n_heads - 1)

st.subheader(f"Layer {layer}")
if why and view.layer < 0:
    st.info(show.literal(why), icon=":material/info:")
st.caption(show.literal(SPIKE_DEFINITION))
show.chart(spike_chart(spike_scores(result.metrics), layer), "spike_scores", key="spike_chart")
opening = "the top-scoring layer" if why is None else "the layer with the largest median rank change"
st.selectbox(
    "Layer",
    [-1, *range(n_layers)],
    format_func=lambda value: f"{opening} ({top})" if value == -1 else f"layer {value}",
    help="The page opens on the layer with the highest spike score, or, when nothing spikes, on the layer where "
    "ranks change most.",
    **bind("layer", view.layer if 0 <= view.layer < n_layers else -1),
)

with st.spinner(f"Decomposing layer {layer}'s attention into its {n_heads} heads…"):
    parts, attribution = cached_heads(view.model, view.text, layer, view.reference)
report = layer_report(result, context.classes, parts, attribution)

st.subheader("Which tokens leap")
show.caption(result, report.leap_summary)
show.table(report.leaps, f"spikes_layer_{layer}", key="spike_table")

st.subheader("Against the anisotropy baseline")
with st.spinner("Computing the corpus statistics (once per model and stage)…"):
    background = cached_background(view.model, view.stage, view.reference)
st.caption(
    show.literal(
        f"Per layer: the mean cosine between the {view.stage} vectors of two different tokens of the corpus "
        f"({background.n_tokens:,} tokens), beside this text's token cosines to their own references under the "
        f"{view.geometry} geometry. Where the baseline is high, every vector is near every other."
    )
)
show.table(baseline_table(background, result), "anisotropy_baseline", key="baseline_table")

st.subheader(f"Rogue dimensions of layer {layer}")
followed = context.highlighted[:6]
st.caption(
    show.literal(
        f"The dimensions that carry most of the mean cosine between corpus tokens at layer {layer}, and their share "
        "of each highlighted token's cosine with its own reference"
        + (" (showing the first six highlighted tokens)." if len(context.highlighted) > 6 else ".")
        + ("" if followed else " Highlight tokens in the sidebar to see their shares.")
    )
)
show.table(rogue_table(background, result, layer, followed), f"rogue_dimensions_layer_{layer}", key="rogue_table")

st.subheader("The original demo beside the exact computation")
if context.capabilities.original_demo is not None:
    st.info(show.literal(f"Not shown: {context.capabilities.original_demo}."), icon=":material/block:")
else:
    with st.spinner("Running the original demo's computation…"):
        demo = cached_original_demo(view.model, view.text)
    st.caption(
        show.literal(
            "Rank of each token's own embedding per layer: left, as the original demo computed it (untransposed "
            "value and output weights, no biases, raw word rows); right, the exact vector of this view "
            f"(stage {view.stage}, reference {view.reference}, geometry {view.geometry}). Log scale, rank 1 on top."
        )
    )
    show.chart(
        comparison_chart(
            [demo, result], "rank", context.highlighted, relative=False, names=["original demo", "exact (this view)"]
        ),
        "original_demo_vs_exact",
        key="demo_chart",
    )

st.subheader("Why: the heads of the attention sublayer")
st.caption(
    show.literal(
        f"Change in cosine to each token's own reference ({view.reference}) from the block input to attn_residual "
        f"at layer {layer}, split exactly: each head's push along the reference direction, the output bias, and the "
        "rescaling of the residual by the new norm add up to the total (red: towards, blue: away)."
    )
)
show.chart(
    heatmap(
        report.attribution, "token", "part", "change in cosine", ("token", "part", "change in cosine"), diverging=True
    ),
    f"head_attribution_layer_{layer}",
    key="attribution_chart",
)

st.subheader("Attention pattern and attention sinks")
st.selectbox("Head", list(range(n_heads)), **bind("head", head))
pattern = attention_pattern(parts, labels, head, MAX_PATTERN_TOKENS)
shown = min(len(labels), MAX_PATTERN_TOKENS)
st.caption(
    show.literal(
        f"Attention weights of head {head} at layer {layer}, as the model computed them; rows sum to 1."
        + (f" Showing the first {shown} of {len(labels)} tokens as queries and keys." if shown < len(labels) else "")
    )
)
show.chart(
    heatmap(pattern, "key", "query", "attention", ("key token", "query token", "attention weight"), diverging=False),
    f"attention_layer_{layer}_head_{head}",
    key="pattern_chart",
)
st.caption(
    "Per head, the share of attention (averaged over query tokens) on special tokens, the first token where it is "
    "not special (the attention sink of decoders without a BOS token), punctuation and other tokens."
)
show.chart(
    heatmap(
        report.sink_shares, "keys", "head", "share", ("attention to", "head", "share of attention"), diverging=False
    ),
    f"attention_sinks_layer_{layer}",
    key="sinks_chart",
)

st.subheader("Residual stream against attention update")
st.caption(
    show.literal(f"L2 norm per token at layer {layer}: the block input against what the attention sublayer adds.")
)
show.chart(norms_chart(report.norms), f"norms_layer_{layer}", key="norms_chart")

st.subheader("Outlier dimensions")
if report.outliers is None:
    st.caption("Layer 0 has no previous layer to change from; pick a later layer.")
else:
    show.caption(
        result,
        f"The hidden dimensions that carry most of the squared change of the stage vectors into layer {layer}, "
        "with their share of the change into the layer before",
    )
    show.table(report.outliers, f"outlier_dimensions_layer_{layer}", key="outlier_table")

st.subheader("What the norm after the attention does")
missing_norm = context.capabilities.reason("attn_output")
if missing_norm is not None:
    st.info(show.literal(f"Not shown: {missing_norm}."), icon=":material/block:")
else:
    with st.spinner("Reading attn_residual and attn_output…"):
        before_norm = view_analysis(view, stage="attn_residual")
        after_norm = view_analysis(view, stage="attn_output")
    st.caption(
        show.literal(
            f"Cosine and rank at layer {layer} at attn_residual (before) and attn_output (after) the "
            + ("attention LayerNorm" if context.info.block == "post_ln" else "MLP's input norm")
            + f", reference {view.reference}, geometry {view.geometry}."
        )
    )
    show.table(layernorm_table(before_norm, after_norm, layer), f"layernorm_layer_{layer}", key="layernorm_table")

st.subheader("Corpus check: does it happen regardless of the text?")
uploaded = st.file_uploader(
    "Your own texts (optional)",
    type=list(ext.removeprefix(".") for ext in FORMATS),
    help="; ".join(f"{ext}: {meaning}" for ext, meaning in FORMATS.items())
    + f". Up to {settings().max_text_chars:,} characters in all (setting max_text_chars); for a corpus of any "
    "size, run `python -m analysis sweep` (see the README).",
)
own_texts = None
if uploaded is not None:
    try:
        own_texts = texts_from_upload(uploaded.name, uploaded.getvalue(), settings().max_text_chars)
    except ValueError as error:
        st.error(show.literal(str(error)), icon=":material/error:")
corpus_texts = own_texts.texts if own_texts else sentences
source = (
    f"{len(corpus_texts)} texts of {uploaded.name} ({own_texts.skipped_empty} empty ones skipped)"
    if own_texts
    else f"{len(sentences)} varied English sentences shipped with Token Trails"
)
st.caption(
    show.literal(
        f"{source}, run through {view.model} (stage {view.stage}, reference {view.reference}): the share of tokens "
        "of each word class that spike at each layer, with 95% Wilson intervals. For thousands of texts, several "
        "geometries and a Parquet dataset: `python -m analysis sweep --model MODEL --input FILE --out DIR`."
    )
)
corpus_key = ("corpus", view.model, view.stage, view.reference, own_texts.sha256 if own_texts else None)
if run_once_button(corpus_key, f"Run the corpus check ({len(corpus_texts)} texts)"):
    own = tuple(own_texts.texts) if own_texts else None
    corpus = with_progress(
        "Running the corpus check…",
        "Text",
        lambda on_progress: cached_corpus(view.model, view.stage, view.reference, own, _on_progress=on_progress),
    )
    show.chart(corpus_chart(corpus), "corpus_spikes", key="corpus_chart")
    show.table(corpus, "corpus_spikes", key="corpus_table")
