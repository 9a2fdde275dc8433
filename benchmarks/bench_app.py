"""Server time of the dashboard's reruns on the roberta-base shape (random weights, saved as safetensors).

    python -m benchmarks.bench_app

Measures, with Streamlit's AppTest, the time the script runs take inside the runner (the server's own work,
not AppTest's parsing of the result): the first load, a rerun that only changes the highlighted token
(target: median < 50 ms; nothing is recomputed, the chart specs are cached and only their rows change),
a new text on the seed sentence (target well under 1 s), and a page switch.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

from tests.synthetic import ROBERTA_BASE_SHAPE, random_roberta

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
NEW_TEXTS = [
    "Time flies like an arrow. Fruit flies like a bandana.",
    "Time flies like an arrow; fruit flies like a banana.",
    "Time flew like an arrow. Fruit flies like a banana.",
]


_script_seconds: list[float] = []


def _time_script_runs() -> None:
    """Record how long each script run takes inside the runner: the server's own work, without AppTest's."""
    original = script_runner.ScriptRunner._run_script

    def timed_run(self, rerun_data):
        start = time.perf_counter()
        try:
            return original(self, rerun_data)
        finally:
            _script_seconds.append(time.perf_counter() - start)

    script_runner.ScriptRunner._run_script = timed_run


def timed(step) -> float:
    """Server time of the script runs that `step` causes."""
    before = len(_script_seconds)
    step()
    return sum(_script_seconds[before:])


def main() -> None:
    _time_script_runs()
    lm = random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape")
    with tempfile.TemporaryDirectory() as folder:
        lm.hf_model.save_pretrained(folder)
        lm.tokenizer.save_pretrained(folder)
        app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=600)
        app.query_params["model"] = folder
        first = timed(app.run)
        assert not app.exception and not app.error, (app.exception, [e.value for e in app.error])
        switch = timed(lambda: app.switch_page("pages/2_Rank_plots.py").run())
        highlight = []
        for position in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12):
            highlight.append(timed(lambda p=position: app.sidebar.multiselect[0].set_value([p]).run()))
        new_text = [timed(lambda t=text: app.sidebar.text_area[0].input(t).run()) for text in NEW_TEXTS]
        assert not app.exception and not app.error
    report = {
        "model": "random roberta-base shape (12 layers, hidden 768, vocab 50,265)",
        "page": "Rank plots (two charts and the neighbour table: the heaviest page)",
        "first_load_s": first,
        "page_switch_s": switch,
        "highlight_rerun_ms_median": 1000 * statistics.median(highlight),
        "highlight_rerun_ms_p10_p90": [1000 * q for q in statistics.quantiles(highlight, n=10)[::8]],
        "highlight_rerun_ms_max": 1000 * max(highlight),
        "highlight_rerun_ms_each": [round(1000 * seconds, 1) for seconds in highlight],
        "new_text_s_median": statistics.median(new_text),
        "new_text_s_max": max(new_text),
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_app.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
