"""The static summary a finished run leaves in the notebook: HTML that needs no JavaScript.

``summary_html(result)`` renders an :class:`~maggy_magic.result.ExperimentResult` as one
self-contained HTML fragment: the run's state and counts, the best trial and its
parameters, the learning curves as an inline SVG drawn here (metric against step per
trial, the best one highlighted, early-stopped ones dimmed, failed ones dashed), and the
trial table (best first, at most ``max_rows`` rows). Everything user-supplied is escaped.
The size is bounded whatever the number of trials: curves and rows are capped and each
curve is thinned to a fixed number of points.

A search's summary also has its parallel coordinates and parameter importances
(:mod:`.search_svg`).

An ablation study's summary also shows each component's effect: a bar chart (inline SVG,
drawn here) of the metric without the component minus the base's, bars that hurt the
metric in red, the others in green, at most ``MAX_BARS`` components.

``ranked(records, direction)`` is the order every display uses: scored trials best first,
then unscored ones (running, failed) by id.
"""

from __future__ import annotations

import html
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .search_svg import search_section

#: At most this many learning curves are drawn (the best ones).
MAX_CURVES = 100
#: Each curve is thinned to at most this many points.
MAX_POINTS = 120
#: At most this many components get a bar in an ablation study's chart.
MAX_BARS = 60

_WIDTH, _HEIGHT = 640, 240
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 64, 16, 12, 36
_BEST, _NORMAL, _STOPPED, _FAILED = "#d62728", "#1f77b4", "#9e9e9e", "#ff7f0e"
_WORSE, _BETTER = "#d62728", "#2ca02c"


def ranked(records: Iterable[Dict[str, Any]], direction: str) -> List[Dict[str, Any]]:
    """Trial records ordered best first; trials without a value follow, by trial id."""
    records = list(records)
    def is_scored(r: Dict[str, Any]) -> bool:
        return r.get("value") is not None and r.get("state") != "FAILED"

    scored = [r for r in records if is_scored(r)]
    rest = [r for r in records if not is_scored(r)]
    scored.sort(key=lambda r: r["value"], reverse=(direction == "max"))
    rest.sort(key=lambda r: _trial_key(r.get("trial")))
    return scored + rest


def fmt(value: Any) -> str:
    """A compact rendering of a metric, parameter or duration."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_html(result: Any, *, max_rows: int = 50) -> str:
    """The static HTML summary of ``result`` (an ExperimentResult)."""
    records = list(result.trial_records)
    key = result.optimization_key
    order = ranked(records, result.direction)
    best = result.best_trial
    parts = [
        '<div class="maggy-summary" style="font-family:sans-serif;font-size:13px">',
        f'<div style="font-weight:bold;font-size:14px">maggy-magic · {_e(result.name)} · '
        f'run {_e(result.run_id)} · <span class="maggy-state">{_e(result.state)}</span></div>',
        f"<div>{_e(_counts_line(result, len(records)))}</div>",
    ]
    reason = getattr(result, "stop_reason", None)
    if reason:  # a stop is no error: the Stop button, the time budget or the target
        parts.append(f'<div class="maggy-stop-reason">stopped: {_e(reason)}</div>')
    elif result.error:
        parts.append(f'<div style="color:{_BEST}">{_e(result.error)}</div>')
    if best is not None:
        params = ", ".join(f"{_e(k)}={_e(fmt(v))}" for k, v in best["params"].items())
        parts.append(f'<div class="maggy-best">best {_e(key)} = <b>{_e(fmt(best["value"]))}'
                     f'</b> (trial {_e(best["trial"])}, {result.direction}) with '
                     f"{params or 'no parameters'}</div>")
    else:
        parts.append("<div>no trial produced a metric</div>")
    ablation = _ablation_rows(records)
    if ablation:
        parts.append(ablation_section(ablation, key, result.direction))
    plot = learning_curves_svg(order, key, best["trial"] if best else None)
    if plot:
        parts.append(plot)
        parts.append(f'<div style="color:#666;font-size:11px"><span style="color:{_BEST}">'
                     f'━</span> best trial · <span style="color:{_STOPPED}">━</span> '
                     f'early-stopped · <span style="color:{_FAILED}">┅</span> failed</div>')
    parts.append(search_section(result))   # parallel coordinates, importances
    parts.append(_table(order[:max_rows], key, best["trial"] if best else None))
    if len(order) > max_rows:
        parts.append(f"<div><i>showing the best {max_rows} of {len(order)} trials; "
                     "result.trials has them all</i></div>")
    tracked = mlflow_line(result)
    if tracked:
        parts.append(f'<div class="maggy-mlflow" style="color:#666">{_e(tracked)}</div>')
    parts.append(f'<div style="color:#666">run directory: <code>{_e(result.run_dir)}</code>'
                 "</div></div>")
    return "\n".join(parts)


def mlflow_line(result: Any) -> str:
    """Where MLflow tracking logged the run and what it could not log ("" when off)."""
    report = getattr(result, "mlflow", None)
    if not report:
        return ""
    where = f"MLflow run {report['run_id']} (experiment {report['experiment_id']}) at " \
        f"{report['uri']}" if report.get("run_id") else f"MLflow at {report['uri']}"
    lost = report.get("not_logged")
    return f"{where}; not logged: {lost}" if lost else where


def summary_text(result: Any) -> str:
    """A one-line plain-text stand-in for the summary."""
    best = result.best_trial
    best_text = (f"best {result.optimization_key}={fmt(best['value'])} (trial {best['trial']})"
                 if best else "no metric")
    reason = getattr(result, "stop_reason", None)
    return (f"maggy-magic {result.name} run {result.run_id} {result.state}: "
            f"{_counts_line(result, len(result.trial_records))}; {best_text}"
            + (f"; stopped: {reason}" if reason else "")
            + (f"; {mlflow_line(result)}" if mlflow_line(result) else ""))


def learning_curves_svg(records: Sequence[Dict[str, Any]], key: str,
                        best_id: Optional[str]) -> str:
    """Metric against step for each trial as an inline SVG; records best first.

    When no trial reported steps, each trial's final metric is drawn as a point instead.
    """
    curves = [r for r in records if r.get("steps") and r.get("history")][:MAX_CURVES]
    if best_id is not None and not any(r.get("trial") == best_id for r in curves):
        curves += [r for r in records if r.get("trial") == best_id and r.get("steps")]
    if curves:
        series = [(r, _thin(list(zip(r["steps"], r["history"])))) for r in curves]
        x_label = "step"
    else:
        points = [r for r in records if r.get("value") is not None][:MAX_POINTS * 4]
        if not points:
            return ""
        by_id = sorted(points, key=lambda r: _trial_key(r.get("trial")))
        series = [(r, [(i, r["value"])]) for i, r in enumerate(by_id)]
        x_label = "trial"
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts if y is not None and math.isfinite(y)]
    if not ys:
        return ""
    x0, x1 = _span(min(xs), max(xs))
    y0, y1 = _span(min(ys), max(ys))
    plot_w = _WIDTH - _PAD_LEFT - _PAD_RIGHT
    plot_h = _HEIGHT - _PAD_TOP - _PAD_BOTTOM

    def px(x: float) -> float:
        return _PAD_LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return _PAD_TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [f'<svg class="maggy-curves" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
           f'height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
           f'aria-label="learning curves" style="background:#fff">',
           f"<title>{_e(key)} per {x_label} for each trial</title>"]
    bottom, right = _HEIGHT - _PAD_BOTTOM, _WIDTH - _PAD_RIGHT
    out.append(f'<path d="M{_PAD_LEFT},{_PAD_TOP} V{bottom} H{right}" fill="none" '
               'stroke="#444" stroke-width="1"/>')
    for value, y in ((y1, _PAD_TOP), (y0, bottom)):
        out.append(f'<text x="{_PAD_LEFT - 4}" y="{y + 4:.1f}" font-size="10" '
                   f'text-anchor="end">{_e(fmt(value))}</text>')
    for value, x in ((x0, _PAD_LEFT), (x1, right)):
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" font-size="10" '
                   f'text-anchor="middle">{_e(fmt(value))}</text>')
    out.append(f'<text x="{_PAD_LEFT + plot_w / 2:.1f}" y="{_HEIGHT - 4}" font-size="11" '
               f'text-anchor="middle">{x_label}</text>')
    out.append(f'<text x="12" y="{_PAD_TOP + plot_h / 2:.1f}" font-size="11" '
               f'text-anchor="middle" transform="rotate(-90 12 {_PAD_TOP + plot_h / 2:.1f})">'
               f"{_e(key)}</text>")
    # draw the best last, so it stays on top
    for record, pts in sorted(series, key=lambda s: s[0].get("trial") == best_id):
        color, width, opacity, dash = _style(record, best_id)
        label = f"trial {record.get('trial')} ({record.get('state')})"
        coords = [(px(x), py(y)) for x, y in pts if y is not None and math.isfinite(y)]
        if len(coords) == 1:
            (cx, cy), = coords
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{3 if width < 2 else 4.5}" '
                       f'fill="{color}" fill-opacity="{opacity}"><title>{_e(label)}'
                       "</title></circle>")
        elif coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="{width}" stroke-opacity="{opacity}"{dash}>'
                       f"<title>{_e(label)}</title></polyline>")
    out.append("</svg>")
    return "".join(out)


def ablation_section(rows: Sequence[Dict[str, Any]], key: str, direction: str) -> str:
    """The heading line and bar chart of an ablation study (rows from
    :func:`maggy_magic.ablation.results.component_rows`, base first)."""
    base = next((r for r in rows if r.get("kind") == "base"), None)
    if base is not None and base.get("value") is not None:
        head = (f"ablation: {_e(key)} without each component, against the base "
                f"{_e(key)} = <b>{_e(fmt(base['value']))}</b> (trial {_e(base['trial'])})")
    else:
        head = "ablation: the base trial produced no metric, so nothing can be compared"
    parts = [f'<div class="maggy-ablation-head" style="margin-top:6px">{head}</div>']
    chart = ablation_bars_svg(rows, key, direction)
    if chart:
        parts.append(chart)
        parts.append(f'<div style="color:#666;font-size:11px"><span style="color:{_WORSE}">'
                     f'■</span> worse without it (the component helps) · <span style="color:'
                     f'{_BETTER}">■</span> no worse without it · result.ablation has the '
                     "table</div>")
    return "\n".join(parts)


def ablation_bars_svg(rows: Sequence[Dict[str, Any]], key: str, direction: str) -> str:
    """One horizontal bar per component: its metric minus the base's, from a zero line;
    components without a difference (failed, no base) are listed without a bar."""
    items = [r for r in rows if r.get("kind") != "base"][:MAX_BARS]
    if not items:
        return ""
    diffs = [r["difference"] for r in items if _finite(r.get("difference"))]
    scale = max((abs(d) for d in diffs), default=0.0) or 1.0
    row_h, label_w, value_w = 20, 170, 90
    height = _PAD_TOP + row_h * len(items) + 20
    plot_w = _WIDTH - label_w - value_w
    zero = label_w + plot_w / 2
    half = plot_w / 2 - 4
    out = [f'<svg class="maggy-ablation" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
           f'height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
           f'aria-label="ablation" style="background:#fff">',
           f"<title>{_e(key)} without each component minus the base's</title>",
           f'<line x1="{zero:.1f}" y1="{_PAD_TOP - 4}" x2="{zero:.1f}" '
           f'y2="{height - 16}" stroke="#444" stroke-width="1"/>',
           f'<text x="{zero:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">'
           f"0 (base)</text>"]
    for value, anchor in ((-scale, "start"), (scale, "end")):
        x = zero + (value / scale) * half
        out.append(f'<text x="{x:.1f}" y="{height - 4}" font-size="10" '
                   f'text-anchor="{anchor}">{_e(_signed(value))}</text>')
    for i, row in enumerate(items):
        y = _PAD_TOP + i * row_h
        label, kind = str(row.get("component")), str(row.get("kind") or "")
        short = label if len(label) <= 18 else label[:17] + "…"
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
                   f"<title>{_e(kind)} {_e(label)}</title>{_e(short)} "
                   f'<tspan fill="#888" font-size="9">{_e(kind)}</tspan></text>')
        diff = row.get("difference")
        if not _finite(diff):
            why = "failed" if row.get("state") == "FAILED" else "no metric"
            out.append(f'<text x="{zero + 4:.1f}" y="{y + 14}" font-size="11" '
                       f'fill="{_STOPPED}">{why}</text>')
            continue
        worse = diff < 0 if direction == "max" else diff > 0
        width = abs(diff) / scale * half
        x = zero - width if diff < 0 else zero
        color = _WORSE if worse else _BETTER
        tip = (f"{row.get('kind')} {label}: {key} {fmt(row.get('value'))} "
               f"({_signed(diff)} against the base; trial {row.get('trial')})")
        out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(width, 1.0):.1f}" '
                   f'height="{row_h - 6}" fill="{color}"><title>{_e(tip)}</title></rect>')
        out.append(f'<text x="{_WIDTH - value_w + 6}" y="{y + 14}" font-size="11">'
                   f"{_e(_signed(diff))}</text>")
    out.append("</svg>")
    return "".join(out)


# -- helpers --------------------------------------------------------------------------
def _ablation_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    from ..ablation.results import component_rows

    return component_rows(records)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _trial_key(trial: Any) -> Tuple[int, Any]:
    text = str(trial)
    return (0, int(text)) if text.isdigit() else (1, text)


def _counts_line(result: Any, total: int) -> str:
    return (f"{total} trials: {result.num_finished} finished, "
            f"{result.num_early_stopped} early-stopped, {result.num_failed} failed")


def _span(low: float, high: float) -> Tuple[float, float]:
    if high > low:
        return low, high
    pad = abs(low) * 0.05 or 1.0
    return low - pad, high + pad


def _thin(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    stride = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * stride)] for i in range(MAX_POINTS)]


def _style(record: Dict[str, Any], best_id: Optional[str]) -> Tuple[str, float, float, str]:
    if record.get("trial") == best_id:
        return _BEST, 2.5, 1.0, ""
    state = record.get("state")
    if state == "EARLY_STOPPED":
        return _STOPPED, 1.0, 0.5, ""
    if state == "FAILED":
        return _FAILED, 1.0, 0.7, ' stroke-dasharray="4 3"'
    return _NORMAL, 1.2, 0.7, ""


def _table(records: Sequence[Dict[str, Any]], key: str, best_id: Optional[str]) -> str:
    names: List[str] = []
    for record in records:
        names.extend(n for n in record.get("params", {}) if n not in names)
    head = ["trial", "state", key, *names, "last step", "duration (s)", "worker"]
    rows = ['<table class="maggy-trials" style="border-collapse:collapse;margin:6px 0">',
            "<thead><tr>" + "".join(
                f'<th style="text-align:left;padding:2px 8px;border-bottom:1px solid #999">'
                f"{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for record in records:
        steps = record.get("steps") or []
        cells = [record.get("trial"), record.get("state"), fmt(record.get("value")),
                 *(fmt(record.get("params", {}).get(n)) for n in names),
                 steps[-1] if steps else "", fmt(record.get("duration")),
                 record.get("worker") or ""]
        weight = ";font-weight:bold" if record.get("trial") == best_id else ""
        rows.append("<tr>" + "".join(f'<td style="padding:2px 8px{weight}">{_e(c)}</td>'
                                     for c in cells) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)
