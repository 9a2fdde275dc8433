"""Token Trails home page: pick a model and a text in the sidebar, see every token's cosine and rank per layer."""

from __future__ import annotations

import streamlit as st

import analysis
from analysis.analyze import METRICS_COLUMNS
from analysis.synthetic import SEED_SENTENCE

MODEL_CHOICES = {
    "all-MiniLM-L6-v2 (bundled, works offline)": analysis.BUNDLED_MODEL,
    "roberta-base (Hugging Face hub)": "roberta-base",
    "roberta-large (Hugging Face hub)": "roberta-large",
}


@st.cache_data(show_spinner=False, max_entries=32)
def cached_analysis(model_name: str, text: str, stage: str, reference: str) -> analysis.AnalysisResult:
    return analysis.analyze(analysis.load_model(model_name), text, stage=stage, reference=reference)


st.set_page_config(page_title="Token Trails", layout="wide")
st.title("Token Trails")
st.caption(
    "How each token's encoding moves through an encoder, layer by layer: cosine similarity to its original "
    "embedding and its rank among all vocabulary embeddings (rank 1 = its own embedding is the nearest)."
)

with st.sidebar:
    text = st.text_area("Text", value=SEED_SENTENCE, help="Any English text; long text is cut at the model's limit.")
    model_label = st.selectbox("Model", list(MODEL_CHOICES), help="roberta-* need the hub or a local cache once.")
    stage = st.selectbox("Stage", list(analysis.STAGES), index=1, help="Where in each block the vector is read.")
    st.caption(analysis.STAGES[stage])
    reference = st.selectbox("Reference", list(analysis.REFERENCES), index=1, help="What 'original embedding' means.")
    st.caption(analysis.REFERENCES[reference])

model_name = MODEL_CHOICES[model_label]
try:
    with st.spinner(f"Loading {model_name} and tracing the text through every layer…"):
        result = cached_analysis(model_name, text, stage, reference)
except ValueError as error:
    st.error(str(error))
    st.stop()

if result.truncated:
    st.warning(
        f"The text was truncated to the model's {len(result.tokens)} tokens (of {result.n_tokens_in_text}): "
        f"everything after character {result.truncated_at_char} is not analysed."
    )
st.subheader(f"Cosine and rank per layer — {result.model}, stage {stage}, reference {reference}")
st.dataframe(
    result.metrics,
    hide_index=True,
    column_config={name: st.column_config.Column(help=meaning) for name, meaning in METRICS_COLUMNS.items()},
)
st.download_button("Download metrics.csv", result.metrics.to_csv(index=False), file_name="metrics.csv", mime="text/csv")
