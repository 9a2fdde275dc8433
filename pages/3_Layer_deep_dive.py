"""Layer deep dive: which tokens leap in rank at a layer and fall back at the next, and why."""

import numpy as np
import pandas as pd
import streamlit as st

from analysis.charts import corpus_chart, heatmap, norms_chart, spike_chart, token_label
from analysis.heads import attention_shares, outlier_dimensions
from analysis.sentences import corpus_sentences
from analysis.spikes import SPIKE_DEFINITION, spike_scores, token_spikes, top_spike_layer
from dashboard import show
from dashboard.cache import cached_analysis, cached_corpus, cached_heads
from dashboard.controller import open_page
from dashboard.view import update_view
from dashboard.widgets import bind

MAX_PATTERN_TOKENS = 96  # a 96 x 96 heatmap stays readable and light; longer texts are cut, and the caption says so

context = open_page("Layer deep dive")
result, view = context.result, context.view
n_layers, n_heads = context.info.layers, context.info.heads
labels = [token_label(p, t) for p, t in zip(result.tokens["position"], result.tokens["text"], strict=True)]

top = top_spike_layer(result.metrics)
if view.layer >= n_layers or view.head >= n_heads:
    update_view(layer=-1 if view.layer >= n_layers else view.layer, head=0 if view.head >= n_heads else view.head)
    st.info(
        show.literal(f"The link's layer or head does not exist in this model ({n_layers} layers, {n_heads} heads).")
    )
layer = view.layer if 0 <= view.layer < n_layers else top
head = min(view.head, n_heads - 1)

st.header(f"Layer {layer} deep dive")
st.caption(show.literal(SPIKE_DEFINITION))
scores = spike_scores(result.metrics)
show.chart(spike_chart(scores, layer), "spike_scores", key="spike_chart")
st.selectbox(
    "Layer",
    [-1, *range(n_layers)],
    format_func=lambda value: f"the top-scoring layer ({top})" if value == -1 else f"layer {value}",
    help="The page opens on the layer with the highest spike score.",
    **bind("layer", view.layer if 0 <= view.layer < n_layers else -1),
)

st.subheader("Which tokens leap")
spikes = token_spikes(result.metrics)
spikes = spikes[spikes["layer"] == layer].assign(word_class=spikes["position"].map(context.classes))
table = spikes[["position", "token", "text", "word_class", "rank_before", "rank", "rank_after", "spikes"]]
table = table.sort_values(["word_class", "position"]).rename(
    columns={
        "rank_before": f"rank at {layer - 1 if layer else 'embedding'}",
        "rank": f"rank at {layer}",
        "rank_after": f"rank at {layer + 1}",
        "word_class": "word class",
    }
)
leapers = spikes[spikes["spikes"]]
counts = leapers["word_class"].value_counts()
show.caption(
    result,
    f"{len(leapers)} of {len(spikes)} tokens spike at layer {layer}"
    + (": " + ", ".join(f"{n} {cls}" for cls, n in counts.items()) if len(leapers) else ""),
)
show.table(table, f"spikes_layer_{layer}", key="spike_table")

st.subheader("Why: the heads of the attention sublayer")
with st.spinner(f"Decomposing layer {layer}'s attention into its {n_heads} heads…"):
    parts, attribution = cached_heads(view.model, view.text, layer, view.reference)
st.caption(
    show.literal(
        f"Change in cosine to each token's own reference ({view.reference}) from the block input to attn_residual "
        f"at layer {layer}, split exactly: each head's push along the reference direction, the output bias, and the "
        "rescaling of the residual by the new norm add up to the total (red: towards, blue: away)."
    )
)
rows = [(f"head {h}", attribution.per_head[h]) for h in range(n_heads)]
rows += [("output bias", attribution.bias), ("rescaling", attribution.rescaling), ("total", attribution.total)]
attribution_frame = pd.DataFrame(
    [
        {"part": part, "token": labels[t], "change in cosine": float(values[t])}
        for part, values in rows
        for t in range(len(labels))
    ]
)
show.chart(
    heatmap(
        attribution_frame, "token", "part", "change in cosine", ("token", "part", "change in cosine"), diverging=True
    ),
    f"head_attribution_layer_{layer}",
    key="attribution_chart",
)

st.subheader("Attention pattern and attention sinks")
st.selectbox("Head", list(range(n_heads)), **bind("head", head))
shown = min(len(labels), MAX_PATTERN_TOKENS)
pattern = pd.DataFrame(
    {
        "query": np.repeat(labels[:shown], shown),
        "key": np.tile(labels[:shown], shown),
        "attention": parts.attention[head, :shown, :shown].reshape(-1),
    }
)
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
groups = context.classes.where(context.classes.isin(["special", "punctuation"]), "other")
shares = attention_shares(parts, groups).reset_index().melt(id_vars="head", var_name="keys", value_name="share")
shares["head"] = "head " + shares["head"].astype(str)
st.caption(
    "Per head, the share of attention (averaged over query tokens) on special tokens, punctuation and other tokens."
)
show.chart(
    heatmap(shares, "keys", "head", "share", ("attention to", "head", "share of attention"), diverging=False),
    f"attention_sinks_layer_{layer}",
    key="sinks_chart",
)

st.subheader("Residual stream against attention update")
norms = pd.DataFrame(
    {
        "label": labels,
        "residual": (parts.residual**2).sum(-1) ** 0.5,
        "attention update": (parts.attention_update() ** 2).sum(-1) ** 0.5,
    }
)
st.caption(
    show.literal(f"L2 norm per token at layer {layer}: the block input against what the attention sublayer adds.")
)
show.chart(norms_chart(norms), f"norms_layer_{layer}", key="norms_chart")

st.subheader("Outlier dimensions")
if layer == 0:
    st.caption("Layer 0 has no previous layer to change from; pick a later layer.")
else:
    show.caption(
        result,
        f"The hidden dimensions that carry most of the squared change of the stage vectors into layer {layer}, "
        "with their share of the change into the layer before",
    )
    show.table(outlier_dimensions(result.vectors, layer), f"outlier_dimensions_layer_{layer}", key="outlier_table")

st.subheader("What the attention LayerNorm does")
with st.spinner("Reading attn_residual and attn_output…"):
    before_norm = cached_analysis(view.model, view.text, "attn_residual", view.reference, view.top_k, view.overlap_n)
    after_norm = cached_analysis(view.model, view.text, "attn_output", view.reference, view.top_k, view.overlap_n)
pick = ["position", "token", "cosine", "rank"]
layernorm = before_norm.metrics.loc[before_norm.metrics["layer"] == layer, pick].merge(
    after_norm.metrics.loc[after_norm.metrics["layer"] == layer, pick],
    on=["position", "token"],
    suffixes=(" before LayerNorm", " after LayerNorm"),
)
st.caption(
    show.literal(
        f"Cosine and rank at layer {layer} at attn_residual (before) and attn_output (after), "
        f"reference {view.reference}."
    )
)
show.table(layernorm, f"layernorm_layer_{layer}", key="layernorm_table")

st.subheader("Corpus check: does it happen regardless of the text?")
sentences = corpus_sentences()
corpus_key = (view.model, view.stage, view.reference)
st.caption(
    show.literal(
        f"{len(sentences)} varied English sentences shipped with Token Trails, run through {view.model} "
        f"(stage {view.stage}, reference {view.reference}): the share of tokens of each word class that spike at "
        "each layer, with 95% Wilson intervals."
    )
)
if corpus_key not in st.session_state.setdefault("corpus_runs", set()):
    st.button(
        f"Run the corpus check ({len(sentences)} sentences)",
        on_click=lambda: st.session_state["corpus_runs"].add(corpus_key),
    )
else:
    progress = st.progress(0.0, text="Running the corpus check…")
    corpus = cached_corpus(
        *corpus_key,
        _on_progress=lambda done, total: progress.progress(done / total, text=f"Sentence {done} of {total}"),
    )
    progress.empty()
    show.chart(corpus_chart(corpus), "corpus_spikes", key="corpus_chart")
    show.table(corpus, "corpus_spikes", key="corpus_table")
