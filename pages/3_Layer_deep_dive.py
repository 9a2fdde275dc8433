"""Layer deep dive: is the spike real, which tokens leap in rank at a layer and fall back at the next, and why."""

import streamlit as st

from analysis.capture.trace import EXTRAS
from analysis.charts import comparison_chart, corpus_chart, heatmap, norms_chart, spike_chart, verdict_chart
from analysis.corpus.verdict import VERDICT_CLASSES, verdict_methods, verdict_summary
from analysis.data import corpus_sentences
from analysis.definitions import SUMMARY_COLUMNS, VERDICT_COLUMNS
from analysis.model.derived import statistics_ready
from analysis.scoring.geometry import GEOMETRY_SPECS
from analysis.spikes import SPIKE_DEFINITION, spike_shares
from analysis.tables import (
    MAX_FOLLOWED,
    LayerReport,
    attention_pattern,
    baseline_table,
    layer_report,
    layernorm_table,
    pattern_caption,
    rogue_table,
    skipped_note,
    token_labels,
)
from dashboard import show
from dashboard.cache import cached_heads, cached_original_demo, view_analysis, view_background, view_lens
from dashboard.controller import Context, deep_dive_layer, open_page
from dashboard.jobs import (
    background_job,
    corpus_job,
    duration,
    estimated_seconds,
    find_corpus,
    find_verdict,
    verdict_job,
)
from dashboard.view import current_view
from dashboard.widgets import bind, follow_job, section, start_button, uploaded_texts

MAX_PATTERN_TOKENS = 96  # a 96 x 96 heatmap stays readable and light; longer texts are cut, and the caption says so


def verdict_section(context: Context) -> None:
    """Is the spike real? Every method over the shipped corpus, on request, with a sentence that answers."""
    view = context.view
    sentences = corpus_sentences()
    methods = verdict_methods(context.capabilities.original_demo is None)
    st.caption(
        show.literal(
            f"Over the {len(sentences)} varied sentences shipped with Token Trails: the share of function and content "
            "words that spike at each layer, under the original demo's computation and under each geometry of the "
            "exact one, with 95% intervals. A spike the geometry controls remove comes from anisotropy or a few "
            "rogue dimensions, not from the tokens."
        )
    )
    st.markdown(" · ".join(f"**{name}**: {show.literal(meaning)}" for name, meaning in methods.items()))
    job = find_verdict(context.lm, view.settings)
    if job is None:
        missing = not statistics_ready(context.lm, view.settings.stage)
        seconds = estimated_seconds(context.lm, tuple(sentences), tuple(methods), VERDICT_CLASSES, missing)
        start_button(
            f"Run the verdict: {len(sentences)} sentences x {len(methods)} methods, about {duration(*seconds)} here",
            lambda: verdict_job(context.lm, view.settings),
            key="run_verdict",
            help="Runs on the server whatever you do meanwhile; every session sees the result once it is done.",
        )
        return
    verdict = follow_job(job)
    if verdict is None:
        return
    st.info(show.literal(verdict_summary(verdict)), icon=":material/fact_check:")
    show.chart(verdict_chart(verdict), "spike_verdict", key="verdict_chart", context=context)
    show.table(verdict, "spike_verdict", key="verdict_table", column_help=VERDICT_COLUMNS)


def layer_section(context: Context) -> int:
    """The spike share of every layer, and the layer the rest of the page is about."""
    layer, opening, notices = deep_dive_layer(context)
    for notice in notices:
        st.info(show.literal(notice), icon=":material/info:")
    shares = spike_shares(context.result.metrics)
    if shares["spikes"].sum() == 0:
        if current_view().layer >= 0:  # else the opening notice has said so
            st.info("No token spikes in this text: every layer's spike share is 0.", icon=":material/info:")
    else:
        show.chart(spike_chart(shares, layer), "spike_shares", key="spike_chart", context=context)
    st.selectbox(
        "Layer",
        [-1, *range(context.info.layers)],
        format_func=lambda value: f"{opening} ({layer})" if value == -1 else f"layer {value}",
        help="The page opens on the layer with the highest spike share, or, when nothing spikes, on the layer where "
        "ranks change most. " + SPIKE_DEFINITION,
        **bind("layer", context.view.layer if 0 <= context.view.layer < context.info.layers else -1),
    )
    return layer


def leaps_section(context: Context, report: LayerReport) -> None:
    """Which tokens leap at the layer, by word class, with the lens beside the embedding ranks."""
    show.caption(context.result, report.leap_summary)
    show.table(report.leaps, f"spikes_layer_{report.layer}", key="spike_table")
    found = context.capabilities
    if found.lens:
        st.caption(
            "The lens columns read the same vectors through the model's own head: a token whose vector leaves its "
            "input embedding (its rank leaps) while its lens rank stays 1 is still predicted by the model."
            + (" Masked mode does not apply here: the lens reads the text as typed." if context.view.masked else "")
        )
    else:
        st.caption(show.literal(f"No lens for {found.model}: {found.reason('lens')}."))


def heads_section(context: Context, report: LayerReport, parts) -> None:
    """Why: each head's share of the change in cosine, the attention patterns, the residual against the update,
    the dimensions that carry the change, and what the norm after the attention does."""
    layer = report.layer
    st.caption(
        show.literal(
            f"Change in cosine to each token's own reference from the block input to attn_residual at layer {layer}, "
            "split exactly: each head's push along the reference direction, the output bias, and the rescaling of "
            "the residual by the new norm add up to the total (red: towards, blue: away)."
        )
    )
    titles = ("token", "part", "change in cosine")
    attribution = heatmap(report.attribution, *titles, titles)
    show.chart(attribution, f"head_attribution_layer_{layer}", key="attribution_chart", context=context)
    head = current_view().head  # a head the model has: `deep_dive_layer` dropped any other
    st.selectbox("Head", list(range(context.info.heads)), **bind("head", head))
    labels = token_labels(context.result)
    st.caption(show.literal(pattern_caption(len(labels), head, layer, MAX_PATTERN_TOKENS)))
    pattern = attention_pattern(parts, labels, head, MAX_PATTERN_TOKENS)
    titles = ("key token", "query token", "attention weight")
    figure = heatmap(pattern, "key", "query", "attention", titles, bounds=(0, 1))
    show.chart(figure, f"attention_layer_{layer}_head_{head}", key="pattern_chart", context=context)
    st.caption(
        "Per head, the share of attention (averaged over query tokens) on special tokens, the first token where it "
        "is not special (the attention sink of decoders without a BOS token), punctuation and other tokens."
    )
    show.chart(
        heatmap(
            report.sink_shares, "keys", "head", "share", ("attention to", "head", "share of attention"), bounds=(0, 1)
        ),
        f"attention_sinks_layer_{layer}",
        key="sinks_chart",
        context=context,
    )
    st.caption(
        show.literal(f"L2 norm per token at layer {layer}: the block input against what the attention sublayer adds.")
    )
    show.chart(norms_chart(report.norms), f"norms_layer_{layer}", key="norms_chart", context=context)
    if report.outliers is None:
        st.caption("Layer 0 has no previous layer to change from: pick a later layer to see the dimensions that move.")
    else:
        show.caption(
            context.result,
            f"The hidden dimensions that carry most of the squared change of the stage vectors into layer {layer}, "
            "with their share of the change into the layer before",
        )
        show.table(report.outliers, f"outlier_dimensions_layer_{layer}", key="outlier_table")
    layernorm_section(context, layer)


def layernorm_section(context: Context, layer: int) -> None:
    """Cosine and rank just before and just after the norm that follows the attention."""
    missing_norm = context.capabilities.reason("attn_output")
    if missing_norm is not None:
        st.info(show.literal(f"No table of the norm after the attention: {missing_norm}."), icon=":material/block:")
        return
    view = context.view
    with st.spinner("Reading attn_residual and attn_output…"):
        before_norm = view_analysis(context.lm, view, EXTRAS, stage="attn_residual")
        after_norm = view_analysis(context.lm, view, EXTRAS, stage="attn_output")
    norm = "attention LayerNorm" if context.info.block == "post_ln" else "MLP's input norm"
    st.caption(
        show.literal(
            f"Cosine and rank at layer {layer} at attn_residual (before) and attn_output (after) the {norm}, reference "
            f"{view.settings.reference}, geometry {view.settings.geometry}."
        )
    )
    show.table(layernorm_table(before_norm, after_norm, layer), f"layernorm_layer_{layer}", key="layernorm_table")


def baseline_section(context: Context, layer: int) -> None:
    """The anisotropy baseline per layer, and the layer's rogue dimensions with their share of the cosine."""
    view = context.view
    waiting = background_job(context.lm, view.settings.stage)
    if waiting is not None:
        st.caption(
            show.literal(
                f"These need statistics of the shipped corpus at stage {view.settings.stage}: one forward pass over "
                f"its {len(corpus_sentences())} sentences, once per model and stage."
            )
        )
        follow_job(waiting)
        return
    background = view_background(context.lm, view)
    st.caption(
        show.literal(
            f"Per layer: the mean cosine between the {view.settings.stage} vectors of two different tokens of the "
            f"corpus ({background.vectors.n_tokens:,} tokens), beside this text's token cosines to their own "
            f"references under the {view.settings.geometry} geometry. Where the baseline is high, every vector is near "
            "every other."
        )
    )
    show.table(baseline_table(background, context.result), "anisotropy_baseline", key="baseline_table")
    followed = context.highlighted[:MAX_FOLLOWED]
    st.caption(
        show.literal(
            f"Rogue dimensions of layer {layer}: the dimensions that carry most of the mean cosine between corpus "
            "tokens, and their share of each highlighted token's cosine with its own reference"
            + (f" (the first {MAX_FOLLOWED} highlighted tokens)." if len(context.highlighted) > MAX_FOLLOWED else ".")
            + ("" if followed else " Highlight tokens in the sidebar to see their shares.")
        )
    )
    show.table(
        rogue_table(background, context.result, layer, followed), f"rogue_dimensions_layer_{layer}", key="rogue_table"
    )


def original_demo_section(context: Context) -> None:
    """The seed demo's ranks beside the exact ones."""
    if context.capabilities.original_demo is not None:
        st.info(show.literal(f"Not shown: {context.capabilities.original_demo}."), icon=":material/block:")
        return
    view = context.view
    with st.spinner("Running the original demo's computation…"):
        demo = cached_original_demo(context.lm, view.text)
    st.caption(
        show.literal(
            "Rank of each token's own embedding per layer, log scale, rank 1 on top: on the left as the original "
            "demo computed it (untransposed value and output weights, no biases, raw word rows), on the right the "
            f"exact vector of this view ({show.settings_words(view.settings, ', ')})."
        )
    )
    show.chart(
        comparison_chart(
            [demo, context.result],
            "rank",
            context.highlighted,
            relative=False,
            names=["original demo", "exact (this view)"],
        ),
        "original_demo_vs_exact",
        key="demo_chart",
        context=context,
    )


def corpus_section(context: Context) -> None:
    """The share of tokens that spike per layer and word class over many texts: the shipped ones or an upload."""
    view = context.view
    own, name = uploaded_texts("corpus_upload")
    texts = tuple(own.texts) if own else tuple(corpus_sentences())
    source = own.described(name) if own else f"The {len(texts)} varied English sentences shipped with Token Trails"
    st.caption(
        show.literal(
            f"{source}, run through {view.model} ({show.settings_words(view.settings, ', ')}): the share of tokens of "
            "each word class that spike at each layer, with 95% intervals. For thousands of texts, several geometries "
            "and a Parquet dataset, run python -m analysis sweep --model MODEL --input FILE --out DIR."
        )
    )
    job = find_corpus(context.lm, view.settings, texts)
    if job is None:
        missing = GEOMETRY_SPECS[view.settings.geometry].needs_background and not statistics_ready(
            context.lm, view.settings.stage
        )
        seconds = estimated_seconds(context.lm, texts, (view.settings.geometry,), None, missing)
        start_button(
            f"Run the corpus check: {len(texts):,} texts, about {duration(*seconds)} here",
            lambda: corpus_job(context.lm, view.settings, texts, name or "the shipped corpus"),
            key="run_corpus",
            help="Runs on the server whatever you do meanwhile; every session sees the result once it is done.",
        )
        return
    found = follow_job(job)
    if found is None:
        return
    corpus, unreadable = found
    if unreadable:
        st.warning(show.literal(skipped_note(unreadable)), icon=":material/warning:")
    show.chart(corpus_chart(corpus), "corpus_spikes", key="corpus_chart", context=context)
    show.table(corpus, "corpus_spikes", key="corpus_table", column_help=SUMMARY_COLUMNS)


context = open_page("Layer deep dive", EXTRAS)
st.header("Layer deep dive")
show.explanations()
with section("Is the spike real? Every method over the shipped corpus", "verdict", expanded=True):
    verdict_section(context)
layer = layer_section(context)
st.subheader(f"Layer {layer}")
with st.spinner(f"Decomposing layer {layer}'s attention into its {context.info.heads} heads…"):
    parts, attribution = cached_heads(context.lm, context.view.text, layer, context.view.settings.reference)
# The lens columns read the very vectors the rank columns rank: the view's stage, not the lens view's stage.
lens = (
    view_lens(context.lm, context.view, EXTRAS, stage=context.view.settings.stage)
    if context.capabilities.lens
    else None
)
report = layer_report(context.result, context.classes, parts, attribution, lens)
with section(f"Which tokens leap at layer {layer}", "leaps", expanded=True):
    leaps_section(context, report)
with section("Why: the heads of the attention sublayer", "heads", expanded=True):
    heads_section(context, report, parts)
with section("Against the anisotropy baseline, and the rogue dimensions", "baseline"):
    baseline_section(context, layer)
with section("The original demo beside the exact computation", "original_demo"):
    original_demo_section(context)
with section("Corpus check: does it happen regardless of the text?", "corpus"):
    corpus_section(context)
