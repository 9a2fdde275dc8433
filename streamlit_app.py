"""Token Trails home page: what the tool shows, the tokens of the current text, the model's facts, the pages."""

import streamlit as st

from analysis.charts import token_label
from analysis.wordclass import WORD_CLASSES
from dashboard.show import literal
from dashboard.sidebar import bind, page_links, render_sidebar

context = render_sidebar("Home")
result = context.result

st.title("Token Trails")
st.markdown(
    "Follow every token of a text through every layer of an encoder transformer. For each token and layer the "
    "pages show the **cosine similarity** of its vector to its original embedding, its **rank** among all "
    "vocabulary embeddings (rank 1 = its own embedding is the nearest), its **nearest vocabulary neighbours**, "
    "and how much that neighbourhood **overlaps** the previous layer's. Pick the text, model, stage and "
    "reference in the sidebar; the choices stay as you move between pages and live in the page's link."
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
with st.expander("Tokens as a table, with word classes"):
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
facts = context.facts
st.caption(literal(f"{facts['model']} ({facts['architecture']})"))
for column, name in zip(
    st.columns(5), ["layers", "hidden size", "attention heads", "vocabulary size", "max tokens"], strict=True
):
    column.metric(name, f"{facts[name]:,}")

st.subheader("Pages")
page_links()
