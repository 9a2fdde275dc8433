"""What any honest chart must satisfy, checked on the chart as the browser draws it: the Vega-Lite spec a page
sends, with its rows, rendered to SVG by vl-convert (the same Vega the browser runs). Generic: nothing here
names a chart of today's pages.

- a diverging colour scale is symmetric around its midpoint (domain [-m, m]);
- a quantitative colour scale has a fixed domain (never stretched over the data's own range), holds every value
  drawn, and its legend says the range of the values (`here LOW to HIGH`);
- no axis repeats a tick label (`0%`, `0%`, `0%`) or shows one no reader can use (`1.00000000006`);
- no legend is empty, and no title is cut short;
- no chart is shorter than MIN_HEIGHT pixels;
- highlighted tokens are keyed by label (`key_colours`), so a caller can check a token keeps its colour.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import vl_convert

from analysis.charts import _VL_VERSION, HIGHLIGHT_KEY, MIN_HEIGHT

DIVERGING_SCHEMES = {"redblue", "blueorange", "brownbluegreen", "purplegreen", "pinkyellowgreen", "purpleorange",
                     "redgrey", "redyellowblue", "redyellowgreen", "spectral"}  # fmt: skip
SVG = "{http://www.w3.org/2000/svg}"


def app_chart(element) -> tuple[dict, pd.DataFrame]:
    """An AppTest vega_lite_chart element as (spec with its rows inline, the rows as one frame)."""
    spec = json.loads(element.proto.spec)
    frames = {named.name: pa.ipc.open_stream(named.data.data).read_pandas() for named in element.proto.datasets}
    spec["datasets"] = {name: json.loads(frame.to_json(orient="records")) for name, frame in frames.items()}
    rows = pd.concat(frames.values(), ignore_index=True) if frames else pd.DataFrame()
    return spec, rows


def _nodes(node: object, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _nodes(value, (*path, index))


def colour_encodings(spec: dict) -> Iterator[dict]:
    """Every colour (or fill) encoding with a field, wherever it sits in the spec."""
    for path, node in _nodes(spec):
        if path and path[-1] in ("color", "fill") and len(path) >= 2 and path[-2] == "encoding" and "field" in node:
            yield node


def key_colours(spec: dict) -> dict[str, str]:
    """The highlighted tokens' colours by label, read from the drawn spec's colour scales that list labels."""
    keyed = {}
    for encoding in colour_encodings(spec):
        scale = encoding.get("scale") or {}
        if encoding.get("field") == "label" and isinstance(scale.get("domain"), list):
            assert HIGHLIGHT_KEY not in scale["domain"], "the highlight key was never filled in"
            keyed.update(zip(scale["domain"], scale.get("range", []), strict=False))
    return keyed


def _scale_faults(spec: dict, rows: pd.DataFrame) -> list[str]:
    faults = []
    for encoding in colour_encodings(spec):
        scale = encoding.get("scale") or {}
        if encoding.get("type") != "quantitative" or scale is None:
            continue
        field, domain = encoding["field"], scale.get("domain")
        if not (isinstance(domain, list) and len(domain) == 2):
            faults.append(f"colour scale of {field!r} has no fixed domain: it stretches over the data's range")
            continue
        low, high = float(domain[0]), float(domain[1])
        diverging = scale.get("scheme") in DIVERGING_SCHEMES or "domainMid" in scale
        middle = float(scale.get("domainMid", 0.0))
        if diverging and not np.isclose(middle - low, high - middle, rtol=1e-9, atol=1e-12):
            faults.append(f"diverging scale of {field!r} is not symmetric: {low} to {high} around {middle}")
        values = pd.to_numeric(rows.get(field, pd.Series(dtype=float)), errors="coerce").dropna()
        if len(values) and (values.min() < low - 1e-9 or values.max() > high + 1e-9):
            faults.append(f"colour scale of {field!r} ({low} to {high}) does not hold {values.min()} to {values.max()}")
        title = str((encoding.get("legend") or {}).get("title", encoding.get("title", "")))
        said = re.search(r"here (\S+) to (\S+?)[;)]", title)
        if said is None:
            faults.append(f"legend of {field!r} does not say the range of the values drawn: {title!r}")
        elif len(values) and not np.allclose([float(said[1]), float(said[2])], [values.min(), values.max()],
                                             rtol=5e-3, atol=1e-12):  # fmt: skip
            faults.append(f"legend of {field!r} says {said[1]} to {said[2]}; the values are {values.min()} to "
                          f"{values.max()}")  # fmt: skip
    return faults


def _classes(element: ElementTree.Element) -> str:
    return element.get("class", "")


def _render_faults(spec: dict) -> list[str]:
    svg = vl_convert.vegalite_to_svg(spec, vl_version=_VL_VERSION)
    root = ElementTree.fromstring(svg)
    faults = []
    height = float(root.get("height", 0))
    if height < MIN_HEIGHT:
        faults.append(f"the chart is {height:.0f} px tall, under {MIN_HEIGHT}")
    for group in root.iter(f"{SVG}g"):
        classes = _classes(group)
        if "role-axis" in classes.split() and "mark-group" in classes:
            labels = [
                "".join(text.itertext()).strip()
                for marks in group.iter(f"{SVG}g")
                if "role-axis-label" in _classes(marks)
                for text in marks.iter(f"{SVG}text")
            ]
            repeated = sorted({label for label in labels if labels.count(label) > 1 and label})
            if repeated:
                faults.append(f"{group.get('aria-label', 'an axis')} repeats tick labels {repeated}")
            unreadable = [label for label in labels if re.search(r"\d[.,]?\d{6,}", label.replace(",", ""))]
            if unreadable:  # 1.00000000006: a collapsed domain, not a number a reader can use
                faults.append(f"{group.get('aria-label', 'an axis')} has unreadable tick labels {unreadable[:3]}")
        if "role-legend-title" in classes or "role-axis-title" in classes or "role-title-text" in classes:
            cut = [
                "".join(text.itertext()) for text in group.iter(f"{SVG}text") if "".join(text.itertext()).endswith("…")
            ]
            if cut:
                faults.append(f"a title is cut short: {cut}")
        if "role-legend" in classes.split():
            labels = [
                "".join(text.itertext()).strip()
                for marks in group.iter(f"{SVG}g")
                if "role-legend-label" in _classes(marks)
                for text in marks.iter(f"{SVG}text")
            ]
            gradient = any("role-legend-gradient" in _classes(marks) for marks in group.iter(f"{SVG}g"))
            if not labels and not gradient:
                faults.append(f"an empty legend: {group.get('aria-label', '')}")
    return faults


def chart_faults(spec: dict, rows: pd.DataFrame) -> list[str]:
    """Everything this chart shows that the numbers do not say (empty when it is honest)."""
    return _scale_faults(spec, rows) + _render_faults(spec)
