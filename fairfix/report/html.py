"""A self-contained HTML page of a ``fairfix.audit/1`` or ``fairfix.compare/1`` document.

The page opens in a browser with no network: plots are PNGs drawn on matplotlib's
Agg canvas and embedded as ``data:`` URIs, the CSS is inline, there is no script,
no web font and no URL of any kind; a Content-Security-Policy forbids fetching
anything but ``data:`` images.  Every string that comes from the document (group
names, labels, columns, gate expressions) is escaped with :func:`html.escape`.

matplotlib is an optional dependency (``pip install 'fairfix[report]'``) and is
imported only when a page is rendered.  Library code: nothing here prints.

One module (~640 lines) on purpose: the page is one cohesive thing (its CSS, plots and sections
share the escaping, number formatting and colours defined here).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fairfix import __version__, errors
from fairfix.report.render import SUMMARY_LABELS, fmt_num

AUDIT_SCHEMA = "fairfix.audit/1"
COMPARE_SCHEMA = "fairfix.compare/1"
MATPLOTLIB_MISSING = "the HTML report needs matplotlib: pip install 'fairfix[report]'"

# Per-group metrics shown as bars and table columns, with their display names.
GROUP_METRICS = {"tpr": "TPR", "fpr": "FPR", "accuracy": "accuracy",
                 "selection_rate": "selection rate"}
# Which way is better, for colouring deltas (selection rate has no good direction).
_HIGHER_BETTER = {"accuracy", "worst_group_accuracy", "demographic_parity_ratio", "tpr"}
_LOWER_BETTER = {"tpr_gap", "fpr_gap", "accuracy_gap", "equalized_odds_difference",
                 "equalized_odds_mean", "demographic_parity_difference", "fpr"}
# Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
BEFORE_COLOR, AFTER_COLOR, AUDIT_COLOR = "#999999", "#0072B2", "#0072B2"
_LABEL_CHARS = 40  # group names longer than this are shortened in plots (never in tables)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: #1a1a1a; background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p.meta { color: #555; margin: 2px 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d4d4d4; padding: 4px 10px; vertical-align: top; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
.worst { font-weight: bold; color: #b00020; }
.better { color: #1b7f3b; }
.worse { color: #b00020; }
.small { color: #8a5a00; }
.ci { color: #666; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: bold;
         font-size: 0.9em; }
.tripped { background: #fde2e4; color: #b00020; }
.passed { background: #e3f4e8; color: #1b7f3b; }
.insufficient { background: #fff4d6; color: #8a5a00; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
footer { margin-top: 40px; color: #777; font-size: 0.85em; }
"""


# ------------------------------------------------------------------------------ loading

def load_document(path: str | Path) -> dict[str, Any]:
    """Read an audit or compare JSON file, or the ``compare.json`` of a bundle directory.

    Raises
    ------
    fairfix.errors.DataError
        The path is missing, is not JSON, or holds another schema.
    """
    p = Path(path)
    if p.is_dir():
        inner = p / "compare.json"
        if not inner.is_file():
            raise errors.DataError(f"{p}: a directory without compare.json (not a fairfix bundle)")
        p = inner
    elif not p.is_file():
        raise errors.DataError(errors.MISSING_FILE.format(path=p))
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.DataError(f"{p}: not JSON ({' '.join(str(exc).split())})") from exc
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema not in (AUDIT_SCHEMA, COMPARE_SCHEMA):
        raise errors.DataError(
            f"{p}: not a {AUDIT_SCHEMA} or {COMPARE_SCHEMA} document (schema {schema!r})")
    _check(doc, p)
    return doc


def _check(doc: dict[str, Any], where: Any) -> None:
    """The keys the page needs, with the right types (one line naming the first one missing)."""
    def need(obj: dict[str, Any], name: str, key: str, kind: type) -> None:
        if not isinstance(obj.get(key), kind):
            raise errors.DataError(f"{where}: {doc['schema']} document without a valid {name!r}")

    def groups(entries: list[Any], name: str) -> None:
        for g in entries:
            if not isinstance(g, dict) or not isinstance(g.get("group"), dict):
                raise errors.DataError(f"{where}: an entry of {name!r} has no 'group' object")

    audits: list[tuple[str, dict[str, Any]]] = [("", doc)]
    if doc["schema"] == COMPARE_SCHEMA:
        for key, kind in (("before", dict), ("after", dict), ("groups", list), ("delta", dict)):
            need(doc, key, key, kind)
        groups(doc["groups"], "groups")
        audits = [("before.", doc["before"]), ("after.", doc["after"])]
    for prefix, audit in audits:
        need(audit, prefix + "groups", "groups", list)
        need(audit, prefix + "summary", "summary", dict)
        groups(audit["groups"], prefix + "groups")
    if doc.get("gates") is not None:
        need(doc, "gates", "gates", list)
        if not all(isinstance(g, dict) for g in doc["gates"]):
            raise errors.DataError(f"{where}: an entry of 'gates' is not an object")


# ------------------------------------------------------------------------------ helpers

def _e(x: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(x), quote=True)


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON null, NaN, or something that is not a number)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _signed(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else f"{v:+.3f}"


def _group_name(group: dict[str, Any], columns: Sequence[str]) -> str:
    """The value alone when there is one group column, else ``col=value, col=value``."""
    if len(group) == 1 and list(group) == list(columns):
        return str(next(iter(group.values())))
    return ", ".join(f"{k}={v}" for k, v in group.items())


def _short(s: str) -> str:
    s = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in s)  # tabs, newlines, ...
    return s if len(s) <= _LABEL_CHARS else s[: _LABEL_CHARS - 1] + "…"


def _key(group: dict[str, Any]) -> str:
    return json.dumps(group, sort_keys=True, default=str)


def _delta_class(metric: str, delta: Any) -> str:
    d = _num(delta)
    if d is None or abs(d) < 5e-4:
        return ""
    if metric in _HIGHER_BETTER:
        return "better" if d > 0 else "worse"
    if metric in _LOWER_BETTER:
        return "better" if d < 0 else "worse"
    return ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """An HTML table of already-escaped cells; columns from ``numeric_from`` on align right."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ci_text(ci: Any) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return ""
    lo, hi = _num(ci[0]), _num(ci[1])
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


# ------------------------------------------------------------------------------ plotting

class _Plotter:
    """Figures on matplotlib's Agg canvas (no pyplot, no global backend), as ``<img>`` tags."""

    def __init__(self) -> None:
        try:
            import matplotlib
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise errors.UsageError(MATPLOTLIB_MISSING) from exc
        self._mpl: Any = matplotlib
        self._canvas = FigureCanvasAgg
        self._figure = Figure

    @contextmanager
    def figure(self, width: float, height: float, alt: str, out: list[str],
               caption: str = "") -> Iterator[Any]:
        """Yield a Figure; on exit append its ``<figure>`` HTML (base64 PNG) to ``out``."""
        # parse_math off: a '$' in a group name is text, not TeX.
        style: dict[str, Any] = {"font.size": 9, "axes.spines.top": False,
                                 "axes.spines.right": False, "axes.titlesize": 10,
                                 "text.parse_math": False}
        import logging
        import warnings

        mpl_log = logging.getLogger("matplotlib")
        level = mpl_log.level
        # Glyphs the bundled font lacks (CJK, emoji) draw as boxes in the PNG; the page's tables
        # carry the exact text.  matplotlib's warnings about them are not for the user's terminal.
        with self._mpl.rc_context(style), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            mpl_log.setLevel(logging.ERROR)
            try:
                fig = self._figure(figsize=(width, height), dpi=100, layout="constrained")
                self._canvas(fig)
                yield fig
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
            finally:
                mpl_log.setLevel(level)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        cap = f"<figcaption>{caption}</figcaption>" if caption else ""
        img = f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        out.append(f"<figure>{img}{cap}</figure>")

    def group_bars(self, out: list[str], labels: list[str],
                   panels: list[tuple[str, list[tuple[str, str, list[Any], list[Any]]]]],
                   alt: str, caption: str = "", ncols: int = 2) -> None:
        """Horizontal bars per group: one panel per metric, one bar per series, CI whiskers.

        ``labels`` are the group names as drawn (shortened by the caller); ``panels`` is
        ``[(title, [(series name, colour, values, intervals), ...]), ...]``; an interval
        is ``[low, high]`` or None.
        """
        n = len(labels)
        ncols = max(1, min(ncols, len(panels)))
        nrows = math.ceil(len(panels) / ncols)
        n_series = max(len(series) for _, series in panels)
        row_h = max(1.6, 0.28 * n * n_series + 0.9)
        legend = n_series > 1
        with self.figure(11, row_h * nrows + (0.4 if legend else 0), alt, out, caption) as fig:
            axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
            height = 0.8 / n_series
            for idx, (title, series) in enumerate(panels):
                ax = axes[idx // ncols][idx % ncols]
                for s, (name, color, values, cis) in enumerate(series):
                    pos = [i - 0.4 + height * (s + 0.5) for i in range(n)]
                    vals = [_num(v) for v in values]
                    ax.barh([p for p, v in zip(pos, vals, strict=True) if v is not None],
                            [v for v in vals if v is not None], height=height * 0.92,
                            color=color, label=name)
                    for p, v, ci in zip(pos, vals, cis, strict=True):
                        if v is None:
                            ax.text(0.01, p, "n/a", va="center", fontsize=7, color="#777")
                            continue
                        lo = _num(ci[0]) if isinstance(ci, list | tuple) and len(ci) == 2 else None
                        hi = _num(ci[1]) if isinstance(ci, list | tuple) and len(ci) == 2 else None
                        if lo is not None and hi is not None:
                            ax.errorbar(v, p, xerr=[[max(v - lo, 0.0)], [max(hi - v, 0.0)]],
                                        fmt="none", ecolor="#222", elinewidth=1, capsize=2.5)
                ax.set_title(title, parse_math=False)
                ax.set_xlim(0, 1.0)
                ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
                ax.set_axisbelow(True)
                ax.set_yticks(range(n))
                ax.set_yticklabels(labels, parse_math=False)
                if idx == 0:  # shared y axis: invert once, first group on top
                    ax.invert_yaxis()
            for idx in range(len(panels), nrows * ncols):
                axes[idx // ncols][idx % ncols].set_visible(False)
            if legend:
                handles, names = axes[0][0].get_legend_handles_labels()
                fig.legend(handles, names, loc="outside upper right", ncols=len(names),
                           frameon=False)

    def sweep(self, out: list[str], rows: list[dict[str, Any]], base: dict[str, Any] | None,
              chosen: dict[str, Any] | None, floor: float | None, caption: str) -> None:
        """Accuracy vs worst-group accuracy over the sweep rows.

        One line per (budget, strength) across tau, points coloured by tau, the base model
        and the chosen setting marked.
        """
        pts = [r for r in rows if _num(r.get("accuracy")) is not None
               and _num(r.get("worst_group_accuracy")) is not None]
        alt = "tau sweep: accuracy vs worst-group accuracy"
        with self.figure(8.5, 5.2, alt, out, caption) as fig:
            ax = fig.subplots()
            runs: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
            for r in pts:
                runs.setdefault((r.get("groups"), r.get("steps", r.get("epoch")), r.get("strength")), []).append(r)
            for run in runs.values():
                run = sorted(run, key=lambda r: _num(r.get("tau")) or 0.0)
                if len(run) > 1:
                    ax.plot([r["accuracy"] for r in run], [r["worst_group_accuracy"] for r in run],
                            color="#c8c8c8", linewidth=0.9, zorder=1)
            taus = [_num(r.get("tau")) for r in pts]
            if pts:
                colored = all(t is not None for t in taus)
                color: dict[str, Any] = ({"c": taus, "cmap": "viridis"} if colored
                                         else {"color": AFTER_COLOR})
                sc = ax.scatter([r["accuracy"] for r in pts],
                                [r["worst_group_accuracy"] for r in pts],
                                s=22, zorder=2, label="sweep settings", **color)
                if colored and len(set(taus)) > 1:
                    fig.colorbar(sc, ax=ax, label="tau", shrink=0.85)
            if base and _num(base.get("accuracy")) is not None \
                    and _num(base.get("worst_group_accuracy")) is not None:
                ax.scatter([base["accuracy"]], [base["worst_group_accuracy"]], marker="X", s=140,
                           color="black", zorder=4, label="base model")
            if chosen and _num(chosen.get("accuracy")) is not None \
                    and _num(chosen.get("worst_group_accuracy")) is not None:
                ax.scatter([chosen["accuracy"]], [chosen["worst_group_accuracy"]], marker="*",
                           s=320, color="#D55E00", edgecolors="black", linewidths=0.6, zorder=5,
                           label="chosen")
            if floor is not None:
                ax.axvline(floor, color="#D55E00", linestyle="--", linewidth=1,
                           label="accuracy floor (guard)")
            ax.set_xlabel("accuracy")
            ax.set_ylabel("worst-group accuracy")
            ax.grid(color="#ececec", linewidth=0.8)
            ax.legend(loc="best", fontsize=8)


# ------------------------------------------------------------------------------ sections

def _gates_html(gates: Any) -> str:
    if not gates:
        return "<p>No gates (<code>--fail-on</code>) were given.</p>"
    rows = []
    for g in gates:
        if g.get("tripped"):
            state = '<span class="badge tripped">TRIPPED</span>'
        elif g.get("insufficient_evidence"):
            state = '<span class="badge insufficient">passed, insufficient evidence</span>'
        else:
            state = '<span class="badge passed">passed</span>'
        reasons = "; ".join(_e(r) for r in g.get("reasons") or [])
        rows.append([f"<code>{_e(g.get('expr', ''))}</code>", _e(fmt_num(g.get("value"))),
                     state, reasons])
    return _table(["gate", "value", "result", "reasons"], rows, numeric_from=1)


def _gate_badge(gates: Any) -> str:
    if not gates:
        return ""
    tripped = sum(1 for g in gates if g.get("tripped"))
    weak = sum(1 for g in gates if not g.get("tripped") and g.get("insufficient_evidence"))
    if tripped:
        return f'<span class="badge tripped">{tripped} gate(s) tripped</span>'
    if weak:
        return (f'<span class="badge insufficient">{weak} gate(s) passed without sufficient '
                "evidence</span>")
    return '<span class="badge passed">all gates passed</span>'


def _worst_group_text(summary: dict[str, Any], columns: Sequence[str]) -> str:
    """The worst (group, label) cell and its accuracy (the worst-group accuracy is a cell's)."""
    from fairfix.report.audit import worst_cell_text

    return _e(worst_cell_text(summary) or "-")


def _audit_meta(doc: dict[str, Any]) -> list[str]:
    cols = doc.get("group_columns") or []
    lines = [f"label <code>{_e(doc.get('label'))}</code>"]
    if doc.get("task", "binary") == "binary" and "positive_label" in doc:
        lines.append(f"positive label <code>{_e(doc.get('positive_label'))}</code>")
    lines.append(f"groups by {', '.join(f'<code>{_e(c)}</code>' for c in cols) or '-'}")
    lines.append(f"{_e(doc.get('n', '-'))} rows")
    return lines


def _present(groups: list[dict[str, Any]],
             getter: Callable[[dict[str, Any], str], Any]) -> list[str]:
    """The per-group metrics that at least one group defines."""
    return [m for m in GROUP_METRICS if any(_num(getter(g, m)) is not None for g in groups)]


def _audit_body(doc: dict[str, Any], plot: _Plotter) -> list[str]:
    cols = list(doc.get("group_columns") or [])
    groups = doc["groups"]
    summary = doc["summary"]
    out = [f"<h1>fairfix audit {_gate_badge(doc.get('gates'))}</h1>",
           f"<p class=\"meta\">{' · '.join(_audit_meta(doc))}</p>"]
    if doc.get("task") == "multiclass":
        out.append('<p class="meta">multiclass task: per-class rates are in the JSON document</p>')

    out.append("<h2>Per-group rates</h2>")
    metrics = _present(groups, lambda g, m: g.get(m))
    labels = [_short(_group_name(g["group"], cols)) + (" (small)" if g.get("small") else "")
              for g in groups]
    if groups and metrics:
        panels = [(GROUP_METRICS[m], [(GROUP_METRICS[m], AUDIT_COLOR, [g.get(m) for g in groups],
                                       [(g.get("ci") or {}).get(m) for g in groups])])
                  for m in metrics]
        has_ci = any(g.get("ci") for g in groups)
        whiskers = ("; whiskers: bootstrap interval." if has_ci
                    else " (no intervals: --bootstrap 0).")
        plot.group_bars(out, labels, panels,
                        alt="per-group " + ", ".join(GROUP_METRICS[m] for m in metrics),
                        caption="Bars: the rate in each group" + whiskers)

    out.append("<h3>Per-group table</h3>")
    worst: dict[str, float] = {}
    for m, pick in (("accuracy", min), ("tpr", min), ("fpr", max)):
        vals = [v for v in (_num(g.get(m)) for g in groups) if v is not None]
        if m in metrics and len(set(vals)) > 1:
            worst[m] = pick(vals)
    header = ["group", "n", *[GROUP_METRICS[m] for m in metrics]]
    rows = []
    for g in groups:
        small = ' <span class="small">(small)</span>' if g.get("small") else ""
        row = [_e(_group_name(g["group"], cols)), _e(g.get("n", "-")) + small]
        for m in metrics:
            text = _e(fmt_num(g.get(m)))
            ci = _ci_text((g.get("ci") or {}).get(m))
            if ci:
                text += f' <span class="ci">{ci}</span>'
            is_worst = m in worst and _num(g.get(m)) == worst[m]
            row.append(f'<span class="worst">{text}</span>' if is_worst else text)
        rows.append(row)
    out.append(_table(header, rows, numeric_from=1))
    if worst:
        out.append('<p class="meta">In red: the worst group of each rate (lowest accuracy and TPR, '
                   'highest FPR).</p>')

    out.append("<h2>Summary</h2>")
    sci = doc.get("summary_ci") or {}
    srows = [[_e(SUMMARY_LABELS.get(k, k)), _e(fmt_num(summary.get(k))), _ci_text(sci.get(k))]
             for k in SUMMARY_LABELS if k in summary]
    srows.insert(min(2, len(srows)), ["worst cell", _worst_group_text(summary, cols), ""])
    out.append(_table(["metric", "value", "interval"], srows))

    out.append("<h2>Gates</h2>")
    out.append(_gates_html(doc.get("gates")))
    return out


def _compare_body(doc: dict[str, Any], plot: _Plotter) -> list[str]:
    before, after = doc["before"], doc["after"]
    cols = list(before.get("group_columns") or [])
    groups = doc["groups"]
    out = [f"<h1>fairfix: before and after correction {_gate_badge(doc.get('gates'))}</h1>",
           f"<p class=\"meta\">{' · '.join(_audit_meta(after))}</p>"]
    facts = []
    if doc.get("evaluated_on") is not None:
        facts.append(f"evaluated on {_e(doc['evaluated_on'])}")
    if doc.get("adapter_enabled") is not None:
        facts.append("adapter enabled" if doc["adapter_enabled"] else
                     "<strong>adapter disabled</strong> (no setting passed the no-loss guard; "
                     "outputs equal the base model's)")
    if doc.get("tau") is not None:
        facts.append(f"tau {_e(fmt_num(doc['tau']))}")
    if facts:
        out.append(f"<p class=\"meta\">{' · '.join(facts)}</p>")
    reason = (doc.get("guard") or {}).get("reason") if isinstance(doc.get("guard"), dict) else None
    if reason:
        out.append(f'<p class="meta">guard: {_e(reason)}</p>')
    for line in doc.get("warnings") or []:  # e.g. after-figures on the rows the guard chose from: optimistic
        out.append(f'<p class="meta"><strong>note:</strong> {_e(line)}</p>')

    out.append("<h2>Per-group TPR and FPR, before and after</h2>")
    sides = ("before", "after")
    ci = {p: {_key(g["group"]): g.get("ci") or {} for g in doc[p]["groups"]} for p in sides}
    metrics = [m for m in ("tpr", "fpr")
               if any(_num((g.get(m) or {}).get(p)) is not None for g in groups for p in sides)]
    labels = [_short(_group_name(g["group"], cols)) for g in groups]
    if groups and metrics:
        panels = [(GROUP_METRICS[m], [
            (p, color, [(g.get(m) or {}).get(p) for g in groups],
             [ci[p].get(_key(g["group"]), {}).get(m) for g in groups])
            for p, color in (("before", BEFORE_COLOR), ("after", AFTER_COLOR))]) for m in metrics]
        plot.group_bars(out, labels, panels, alt="per-group TPR and FPR before and after",
                        caption="Grey: the base model; blue: the corrected model.")
    elif groups:
        out.append('<p class="meta">No per-group TPR/FPR (multiclass task): see the table.</p>')

    out.append("<h3>Per-group table</h3>")
    shown = _present(groups, lambda g, m: (g.get(m) or {}).get("before"))
    small = {_key(g["group"]) for g in after["groups"] if g.get("small")}
    rows = []
    for g in groups:
        flag = ' <span class="small">(small)</span>' if _key(g["group"]) in small else ""
        row = [_e(_group_name(g["group"], cols)), _e(g.get("n", "-")) + flag]
        for m in shown:
            v = g.get(m) or {}
            cls = _delta_class(m, v.get("delta"))
            row.append(f"{_e(fmt_num(v.get('before')))} → {_e(fmt_num(v.get('after')))} "
                       f'<span class="{cls}">({_e(_signed(v.get("delta")))})</span>')
        rows.append(row)
    header = ["group", "n", *[GROUP_METRICS[m] + " before → after (delta)" for m in shown]]
    out.append(_table(header, rows))

    out.append("<h2>Summary</h2>")
    bs, as_, delta = before["summary"], after["summary"], doc["delta"]
    srows = []
    for k, name in SUMMARY_LABELS.items():
        if k not in bs and k not in as_:
            continue
        cls = _delta_class(k, delta.get(k))
        srows.append([_e(name), _e(fmt_num(bs.get(k))), _e(fmt_num(as_.get(k))),
                      f'<span class="{cls}">{_e(_signed(delta.get(k)))}</span>'])
    srows.insert(min(2, len(srows)),
                 ["worst cell", _worst_group_text(bs, cols), _worst_group_text(as_, cols), ""])
    out.append(_table(["metric", "before", "after", "delta"], srows))
    out.append('<p class="meta">Green: the change goes the right way (higher accuracy, '
               "smaller gaps); red: the wrong way.</p>")

    attrs = doc.get("attributes")
    if isinstance(attrs, list) and attrs:  # progressive correction: one row per attribute, in fit order
        out.append("<h2>Per attribute</h2>")
        arows = []
        for a in attrs:
            if not isinstance(a, dict):
                continue
            b, f, d = a.get("before") or {}, a.get("after") or {}, a.get("detector") or {}
            cells = [f"{_e(fmt_num(b.get(k)))} → {_e(fmt_num(f.get(k)))}" for k in ("accuracy", "worst_group_accuracy")]
            arows.append([_e(a.get("group", "-")), *cells, _e(d.get("mode", "-")),
                          f"{_e(fmt_num(d.get('tpr')))} / {_e(fmt_num(d.get('fpr')))}",
                          _e(fmt_num(d.get("activation_rate"))), "on" if a.get("adapter_enabled") else "off"])
        out.append(_table(["attribute", "accuracy", "worst-group accuracy", "labels", "detector TPR / FPR",
                           "activation rate", "adapter"], arows))
        out.append('<p class="meta">Each attribute audited alone, before and after the whole correction; '
                   "the tables above are over the intersection of the attributes.</p>")

    det = doc.get("detector")
    if isinstance(det, dict):
        from fairfix.report.audit import minority_note

        out.append("<h2>Detector</h2>")
        minority = det.get("minority")
        minority_text = ", ".join(map(str, minority)) if isinstance(minority, list) else minority
        if doc.get("gate") == "all":  # the adapter is on for every row: the detector decides nothing
            out.append(_table(["mode", "minority", "gate", "activation rate"], [[
                _e(det.get("mode", "-")), _e(minority_text if minority_text not in (None, "") else "-"),
                "every row", _e(fmt_num(det.get("activation_rate")))]], numeric_from=3))
            out.append('<p class="meta">gate: every row: the guard chose the adapter for all rows, so the '
                       "detector's risk score does not decide which rows are corrected.</p>")
        else:
            out.append(_table(["mode", "minority", "TPR", "FPR", "activation rate"], [[
                _e(det.get("mode", "-")), _e(minority_text if minority_text not in (None, "") else "-"),
                _e(fmt_num(det.get("tpr"))), _e(fmt_num(det.get("fpr"))),
                _e(fmt_num(det.get("activation_rate")))]], numeric_from=2))
            out.append('<p class="meta">TPR/FPR: the detector at the operating tau against the '
                       "minority labels of the evaluation rows; activation rate: the share of rows "
                       "the adapter corrected.</p>")
        note = minority_note(doc.get("detector_report"))
        if note:
            out.append(f'<p class="meta">{_e(note)}</p>')
        by = det.get("activation_rate_by_group")
        if isinstance(by, dict) and by:
            names = [_short(str(k)) for k in by]
            plot.group_bars(out, names, [("activation rate by group", [
                ("activation rate", AFTER_COLOR, list(by.values()), [None] * len(by))])],
                alt="detector activation rate by group", ncols=1)
            out.append(_table(["group", "activation rate"],
                              [[_e(k), _e(fmt_num(v))] for k, v in by.items()]))

    sweep = doc.get("sweep")
    if isinstance(sweep, list) and sweep:
        rows_ok = [r for r in sweep if isinstance(r, dict)]
        out.append("<h2>Tau sweep</h2>")
        chosen = doc.get("chosen") if isinstance(doc.get("chosen"), dict) else None
        base = doc.get("base_validation")
        base = base if isinstance(base, dict) else None
        guard = doc.get("guard")
        floor = _num(guard.get("floor")) if isinstance(guard, dict) else None
        ev_doc = doc.get("evidence")
        ev: dict[str, Any] = ev_doc if isinstance(ev_doc, dict) else {}
        where = (f"out-of-fold on {ev.get('rows')} rows ({ev.get('folds')} folds)" if ev.get("kind") == "cross-fit"
                 else "on the validation split")
        desc = f"{len(rows_ok)} setting(s) judged {_e(where)}"
        if chosen:
            desc += "; chosen: " + ", ".join(f"{k} {_e(fmt_num(chosen.get(k)))}"
                                             for k in ("steps", "epoch", "strength", "tau") if k in chosen)
        plot.sweep(out, rows_ok, base, chosen, floor,
                   caption="Each point: one (budget in steps, adapter strength, tau) setting; lines join the "
                           "taus of one (budget, strength). " + desc + ".")

    out.append("<h2>Gates</h2>")
    out.append(_gates_html(doc.get("gates")))
    return out


# ------------------------------------------------------------------------------ page

def render_html(doc: dict[str, Any], *, source: str | None = None) -> str:
    """The whole page for an audit or a compare document, as one HTML string.

    Parameters
    ----------
    doc
        A ``fairfix.audit/1`` or ``fairfix.compare/1`` document (as :func:`load_document` reads).
    source
        Where the document came from, shown in the footer.

    Raises
    ------
    fairfix.errors.DataError
        ``doc`` has another schema or lacks what the page shows.
    fairfix.errors.UsageError
        matplotlib is not installed.
    """
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema not in (AUDIT_SCHEMA, COMPARE_SCHEMA):
        raise errors.DataError(
            f"not a {AUDIT_SCHEMA} or {COMPARE_SCHEMA} document (schema {schema!r})")
    _check(doc, source or "document")
    plot = _Plotter()
    body = _audit_body(doc, plot) if schema == AUDIT_SCHEMA else _compare_body(doc, plot)
    title = "fairfix audit" if schema == AUDIT_SCHEMA else "fairfix compare"
    if source:
        title += f" of {source}"
    footer = (f"Generated by fairfix {_e(__version__)} from a {_e(schema)} document"
              + (f" (<code>{_e(source)}</code>)" if source else "")
              + f"; written by fairfix {_e(doc.get('fairfix_version', '?'))}. "
              "Metric definitions: docs/metrics.md.")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body><main>",
        *body,
        f"<footer>{footer}</footer>",
        "</main></body>",
        "</html>",
        "",
    ])
