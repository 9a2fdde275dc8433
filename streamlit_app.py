"""Token Trails home page: what the tool shows, the tokens of the current text, the model's sizes, the pages."""

import streamlit as st

from analysis.definitions import WORD_CLASSES
from analysis.tables import token_label
from dashboard.controller import open_page
from dashboard.show import literal
from dashboard.widgets import bind, page_links, section

context = open_page("Home")
result = context.result

st.title("Token Trails")
st.markdown(
    "Follow every token of a text through every layer of a transformer, encoder or decoder. For each token and "
    "layer the "
    "pages show the **cosine similarity** of its vector to its original embedding, its **rank** among all "
    "vocabulary embeddings (rank 1 = its own embedding is the nearest), its **nearest vocabulary neighbours**, "
    "and how much that neighbourhood **overlaps** the previous layer's. Where the model comes with its own "
    "prediction head, the **lens** shows the other side: what each layer would predict, for decoders and "
    "encoders alike. Pick the text, model, stage and reference in the sidebar; the choices stay as you move "
    "between pages and live in the page's link."
)

st.subheader("Tokens")
st.caption("Click tokens to highlight them on every page; click again to drop them.")
labels = dict(zip(result.tokens["position"], result.tokens["text"], strict=True))
st.pills(
    "Tokens of the current text",
    list(labels),
    selection_mode="multi",
    format_func=lambda p: literal(token_label(p, labels[p])),
    label_visibility="collapsed",
    **bind("highlight", list(context.view.highlight), widget="chips", convert=tuple),
)
with section("Tokens as a table, with word classes", "tokens"):
    tokens = result.tokens.assign(word_class=context.classes)
    st.dataframe(
        tokens,
        hide_index=True,
        column_config={
            "word_class": st.column_config.TextColumn(
                "word class", help=" ".join(f"{k}: {v}." for k, v in WORD_CLASSES.items())
            )
        },
    )

st.subheader("Model")
info = context.info
st.caption(literal(f"{info.name}: {info.family} ({info.architecture})"))
found = context.capabilities
st.caption(
    literal(
        "Lens: available, through the model's own head (Layer trajectories and Rank plots)."
        if found.lens
        else f"No lens: {found.reason('lens')}."
    )
)
sizes = {
    "layers": info.layers,
    "hidden size": info.hidden_size,
    "attention heads": info.heads,
    "vocabulary size": info.vocab_size,
    "max tokens": info.max_tokens,
}
for column, (label, value) in zip(st.columns(len(sizes)), sizes.items(), strict=True):
    column.metric(label, f"{value:,}")

st.subheader("Pages")
page_links()
