"""The static summary's view of a search: parallel coordinates and parameter importances.

``search_section(result)`` is HTML without JavaScript (inline SVG drawn here), empty for
runs without a search (an ablation study, a distributed run, a run with no scored trial):

- parallel coordinates: one axis per parameter (:mod:`.parcoords`: linear, log or
  categorical) and the metric's last; each scored trial one line, shaded from light
  (worst) to dark (best), the best trial in red on top, early-stopped ones dashed; at most
  ``MAX_LINES`` lines (the best and an even spread of the rest);
- importances (:func:`.importance.param_importances`, fANOVA): one bar per parameter,
  or the note saying why there are none (too few trials, Optuna not installed).

``importance_line(result)`` is the importances as one line of text (the text progress's
final words), empty for runs without a search.

Everything user-supplied is escaped.
"""

from __future__ import annotations

import html
import math
from typing import Any, Dict, List, Optional, Sequence

from . import parcoords
from .importance import param_importances

#: At most this many trials are drawn as lines.
MAX_LINES = 300
#: ... of which these best ones always.
KEEP_BEST = 60

_WIDTH, _HEIGHT = 640, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 56, 28, 30
_BEST, _LOW, _HIGH = "#d62728", (198, 219, 239), (8, 69, 148)


def has_search(records: Sequence[Dict[str, Any]]) -> bool:
    """Whether the trials are those of a search (not an ablation study, not the ranks of
    a distributed run) with parameters."""
    return any(r.get("params") for r in records) and not any(
        "component" in (r.get("info") or {}) or "rank" in (r.get("info") or {})
        for r in records)


def importance_line(result: Any) -> str:
    """``parameter importance (fANOVA, 40 trials): x 91.2% · lr 6.1% · act 2.7%``, or
    the note; empty for runs without a search."""
    records = list(result.trial_records)
    if not has_search(records):
        return ""
    answer = param_importances(getattr(result, "searchspace", None), records)
    if not answer["importances"]:
        return f"parameter importance: {answer['note']}"
    shares = " · ".join(f"{name} {share:.1%}" for name, share in answer["importances"])
    return f"parameter importance ({answer['method']}, {answer['trials']} trials): {shares}"


def search_section(result: Any) -> str:
    """The parallel coordinates and importances of ``result`` (an ExperimentResult)."""
    records = list(result.trial_records)
    if not has_search(records):
        return ""
    scored = [r for r in records if r.get("state") in parcoords.SCORED_STATES
              and _finite(r.get("value"))]
    searchspace = getattr(result, "searchspace", None)
    drawn = parcoords.pick(scored, result.direction, MAX_LINES, KEEP_BEST)
    axes = parcoords.axes(searchspace, drawn)
    if not axes or not drawn:
        return ""
    best = result.best_trial["trial"] if result.best_trial else None
    parts = [parallel_svg(axes, drawn, result.optimization_key, result.direction, best)]
    note = (f"showing {len(drawn)} of {len(scored)} trials: the best "
            f"{min(KEEP_BEST, len(drawn))} and an even spread of the others · "
            if len(drawn) < len(scored) else "")
    parts.append(f'<div style="color:#666;font-size:11px">{_e(note)}each line a trial, '
                 f'darker is better · <span style="color:{_BEST}">━</span> best trial · '
                 "┅ early-stopped</div>")
    parts.append(importance_html(param_importances(searchspace, records)))
    return "\n".join(parts)


def parallel_svg(axes: Sequence[Dict[str, Any]], records: Sequence[Dict[str, Any]],
                 key: str, direction: str, best: Optional[str]) -> str:
    """One vertical axis per parameter plus the metric's; one polyline per record."""
    metric = parcoords.metric_axis(key, [r["value"] for r in records], direction)
    every = list(axes) + [metric]
    step = (_WIDTH - _LEFT - _RIGHT) / max(1, len(every) - 1)
    xs = [_LEFT + i * step for i in range(len(every))]
    plot_h = _HEIGHT - _TOP - _BOTTOM

    def y(position: float) -> float:
        return _TOP + (1 - position) * plot_h

    out = [f'<svg class="maggy-parcoords" xmlns="http://www.w3.org/2000/svg" '
           f'width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
           f'aria-label="parallel coordinates" style="background:#fff">',
           f"<title>each trial's parameters and its {_e(key)}</title>"]
    low, high = metric["domain"]
    # worst first, the best last: the best lines stay on top
    order = sorted(records, key=lambda r: (r.get("trial") == best,
                                           _goodness(r["value"], low, high, direction)))
    for record in order:
        values = parcoords.line_values(axes, record.get("params") or {}) + [record["value"]]
        segments: List[List[str]] = [[]]
        for x, axis, value in zip(xs, every, values):
            where = parcoords.position(axis, value)
            if where is None:
                segments.append([])
            else:
                segments[-1].append(f"{x:.1f},{y(where):.1f}")
        if record.get("trial") == best:
            color, width, opacity = _BEST, 2.5, 1.0
        else:
            color, width, opacity = _shade(_goodness(record["value"], low, high, direction)), \
                1.2, 0.75
        dash = ' stroke-dasharray="4 3"' if record.get("state") == "EARLY_STOPPED" else ""
        tip = _e(f"trial {record.get('trial')}: {key} {_fmt(record['value'])}")
        for points in segments:
            if len(points) > 1:
                out.append(f'<polyline class="maggy-summary-line" points="{" ".join(points)}" '
                           f'fill="none" stroke="{color}" stroke-width="{width}" '
                           f'stroke-opacity="{opacity}"{dash}><title>{tip}</title></polyline>')
    for x, axis in zip(xs, every):
        out.append(f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + plot_h}" '
                   'stroke="#444" stroke-width="1"/>')
        name = axis["name"] + (" (log)" if axis["kind"] == "log" else "")
        out.append(f'<text x="{x:.1f}" y="{_TOP - 10}" font-size="11" text-anchor="middle" '
                   f'font-weight="bold">{_e(name)}</text>')
        for position, label in _ticks(axis):
            out.append(f'<text x="{x + 4:.1f}" y="{y(position) + 3.5:.1f}" font-size="9" '
                       f'fill="#555" stroke="#fff" stroke-width="3" paint-order="stroke">'
                       f"{_e(label)}</text>")
    out.append("</svg>")
    return "".join(out)


def importance_html(answer: Dict[str, Any]) -> str:
    """The importances as bars (SVG), or their note."""
    items = answer.get("importances") or []
    if not items:
        return (f'<div class="maggy-importance-note" style="color:#666">parameter '
                f"importance: {_e(answer.get('note') or 'none')}</div>")
    row_h, label_w, value_w = 18, 150, 60
    height = row_h * len(items) + 6
    bar_w = _WIDTH - label_w - value_w
    out = [f'<div class="maggy-importance-head" style="margin-top:6px">parameter importance '
           f"({_e(answer.get('method'))} over {answer.get('trials')} finished trials)</div>",
           f'<svg class="maggy-summary-importance" xmlns="http://www.w3.org/2000/svg" '
           f'width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
           f'aria-label="parameter importance" style="background:#fff">']
    for i, (name, share) in enumerate(items):
        top = 3 + i * row_h
        short = name if len(name) <= 20 else name[:19] + "…"
        out.append(f'<text x="{label_w - 6}" y="{top + 12}" font-size="11" '
                   f'text-anchor="end">{_e(short)}</text>')
        out.append(f'<rect x="{label_w}" y="{top + 2}" width="{max(1.0, share * bar_w):.1f}" '
                   f'height="{row_h - 5}" fill="#3a7bd5"><title>{_e(name)}: '
                   f"{share:.1%}</title></rect>")
        out.append(f'<text x="{label_w + bar_w + 6}" y="{top + 12}" font-size="11">'
                   f"{share:.1%}</text>")
    out.append("</svg>")
    return "".join(out)


# -- helpers --------------------------------------------------------------------------
def _ticks(axis: Dict[str, Any]) -> List[Any]:
    if axis["kind"] == "categorical":
        labels = axis["categories"]
        every = max(1, math.ceil(len(labels) / 10))
        return [((i + 0.5) / len(labels), label) for i, label in enumerate(labels)
                if i % every == 0]
    low, high = axis["domain"]
    decades = [10.0 ** k for k in range(math.ceil(math.log10(low) - 1e-9),
                                        math.floor(math.log10(high) + 1e-9) + 1)] \
        if axis["kind"] == "log" else []
    if len(decades) >= 2:
        values: tuple = tuple(decades[:: max(1, math.ceil(len(decades) / 6))])
    else:
        values = (low, math.sqrt(low * high) if axis["kind"] == "log" else (low + high) / 2,
                  high)
    if axis.get("integer"):
        values = tuple(sorted({round(v) for v in values if low <= round(v) <= high}))
    return [(parcoords.position(axis, v), _fmt(v)) for v in values]


def _goodness(value: float, low: float, high: float, direction: str) -> float:
    share = (value - low) / (high - low) if high > low else 1.0
    return share if direction == "max" else 1 - share


def _shade(goodness: float) -> str:
    rgb = (round(a + (b - a) * goodness) for a, b in zip(_LOW, _HIGH))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
