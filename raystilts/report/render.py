"""The report of an experiment: the analyses of :mod:`raystilts.analysis.tables` as tables and plots.

    raystilts report --experiment demo --out report/          # then open report/report.html

:func:`write_report` takes the plain numbers of ``Analysis.to_json()`` (no polars here) and
writes into ``out_dir``:

- ``report.html``: self-contained, every plot inlined as a base64 PNG data URI;
- ``report.md``: the same tables in markdown, linking the PNG files beside it;
- ``heatmap.png`` (gain of each intermediate x target), ``distance.png`` (gain vs typological
  distance per language), ``languages.png`` (per-language gain bars with intervals);
- ``analysis.json``: every number, for other tools.

This is the only module that imports matplotlib (Agg backend: no display needed).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raystilts.core.formats import ALL, BEST_SYSTEM, GROUPINGS, SOURCE_LANG, ci
from raystilts.core.formats import num as _num
from raystilts.core.formats import p_value as _p
from raystilts.core.formats import pct as _pct
from raystilts.core.formats import signed as _signed
from raystilts.core.schema import PHASE_SEP

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ReportFiles", "summary_metrics", "write_report"]

Row = Mapping[str, Any]
_DPI = 110  # readable on a laptop screen, small enough to inline a few plots in one page


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    markdown: Path
    numbers: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class _Table:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    caption: str = ""


def write_report(
    analysis: Mapping[str, Any], *, out_dir: Path, experiment: str, source: str
) -> ReportFiles:
    """Write the report of ``analysis`` (``Analysis.to_json()``) into ``out_dir``.

    ``source`` says where the runs came from (the tracking URI), shown under the title.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = _plotted_chains(analysis)
    plots: list[tuple[str, str, Path]] = []  # (title, caption, path)
    for name, title, caption, draw in (
        (
            "heatmap.png",
            "Gain of each intermediate task over the baseline",
            "Mean test gain over all languages (English included), x100, of each chain's "
            "configuration selected on English dev; * marks p < 0.05 in the paired t-test over "
            "seeds. Grey: not run for that target.",
            _heatmap,
        ),
        (
            "distance.png",
            "Gain vs typological distance to English",
            "One point per transfer language (English left out), bars: 95% bootstrap interval "
            "over seeds (none with one seed). Distances from URIEL (synthetic languages: their "
            "built-in distance).",
            _distance_plot,
        ),
        (
            "languages.png",
            "Gain per language",
            "Mean test gain over seeds per language, x100, with its 95% bootstrap interval over "
            "seeds (none with one seed).",
            _language_bars,
        ),
    ):
        figure = draw(analysis, chosen)
        if figure is None:
            continue
        path = out_dir / name
        figure.savefig(path, dpi=_DPI, bbox_inches="tight")
        _close(figure)
        plots.append((title, caption, path))
    tables = _tables(analysis, chosen)
    numbers = out_dir / "analysis.json"
    numbers.write_text(json.dumps(analysis, indent=2, default=_json_default) + "\n")
    header = _header(analysis, experiment, source, chosen)
    markdown = out_dir / "report.md"
    methods = str(analysis.get("methods", ""))
    markdown.write_text(_markdown(experiment, header, tables, plots, methods))
    page = out_dir / "report.html"
    page.write_text(_html(experiment, header, tables, plots, methods))
    return ReportFiles(
        html=page, markdown=markdown, numbers=numbers, plots=tuple(p for _, _, p in plots)
    )


def summary_metrics(analysis: Mapping[str, Any]) -> dict[str, float]:
    """A few headline numbers for the MLflow summary run (fractions, like the trials)."""
    metrics: dict[str, float] = {}
    for result in analysis.get("best_chains", []):
        if result.get("gain_avg") is not None:
            metrics[f"best/{result['target']}/gain_avg"] = float(result["gain_avg"])
        if result.get("avg") is not None:
            metrics[f"best/{result['target']}/test_avg"] = float(result["avg"])
    for row in analysis.get("benchmark", []):
        if row["level"] in ("overall_xtreme", "overall_xtreme_r") and row["score"] is not None:
            system = "best" if row["system"] == BEST_SYSTEM else row["system"]
            metrics[f"benchmark/{row['level']}/{system}"] = float(row["score"])
    return {k: v for k, v in metrics.items() if _safe_key(k)}


# --- what to plot ------------------------------------------------------------------------------


def _plotted_chains(analysis: Mapping[str, Any]) -> dict[str, str]:
    """Per target, the chain whose languages are plotted: the English-dev-selected chain, or,
    when the baseline itself was selected, the intermediate chain with the best English dev
    score (never a choice made on test scores)."""
    chosen: dict[str, str] = {}
    for result in analysis.get("best_chains", []):
        if result["chain"]:
            chosen[result["target"]] = result["chain_name"]
    for row in sorted(
        _gains(analysis, ALL),
        key=lambda r: (-(r["dev_en"] if r["dev_en"] is not None else -math.inf), r["chain"]),
    ):
        chosen.setdefault(row["target"], row["chain"])
    return dict(sorted(chosen.items()))


def _gains(analysis: Mapping[str, Any], grouping: str) -> list[Row]:
    return [r for r in analysis.get("gains", []) if r["grouping"] == grouping]


def _lang_key(code: str) -> tuple[bool, str]:
    return (code != SOURCE_LANG, code)


# --- plots -------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _close(figure: Figure) -> None:
    _pyplot().close(figure)


def _heatmap(analysis: Mapping[str, Any], chosen: Mapping[str, str]) -> Figure | None:
    rows = _gains(analysis, ALL)
    if not rows:
        return None
    plt = _pyplot()
    import numpy as np

    targets = sorted({r["target"] for r in rows})
    labels = sorted({r["label"] for r in rows}, key=lambda s: (s.count(PHASE_SEP), s))
    cell = {(r["label"], r["target"]): r for r in rows}
    values = np.full((len(labels), len(targets)), np.nan)
    for (label, target), r in cell.items():
        if r["gain"] is not None:
            values[labels.index(label), targets.index(target)] = 100 * r["gain"]
    finite = values[np.isfinite(values)]
    bound = max(0.5, float(np.abs(finite).max())) if finite.size else 1.0
    fig, ax = plt.subplots(
        figsize=(2.2 + 1.6 * len(targets), 1.4 + 0.45 * len(labels)), layout="constrained"
    )
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto"
    )
    ax.set_facecolor("#e6e6e6")  # masked cells: this intermediate was not run for the target
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("target")
    ax.set_ylabel("intermediate phases")
    for (label, target), r in cell.items():
        if r["gain"] is None:
            continue
        value = 100 * r["gain"]
        significant = r["p_value"] is not None and r["p_value"] < 0.05
        star = "*" if r["unit"] == "seeds" and significant else ""
        bold = chosen.get(target) == r["chain"]
        ax.text(
            targets.index(target),
            labels.index(label),
            f"{value:+.1f}{star}",
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold" if bold else "normal",
            color="white" if abs(value) > 0.6 * bound else "black",
        )
    fig.colorbar(image, ax=ax, label="gain over baseline (points)", shrink=0.9)
    ax.set_title("Test gain over the baseline, all languages (bold: plotted chain)", fontsize=10)
    return fig


def _distance_plot(analysis: Mapping[str, Any], chosen: Mapping[str, str]) -> Figure | None:
    distances = analysis.get("distances") or {}
    rows = [
        r
        for r in _gains(analysis, "lang")
        if chosen.get(r["target"]) == r["chain"] and r["group"] != SOURCE_LANG
    ]
    if not rows or not distances:
        return None
    plt = _pyplot()
    kinds = list(next(iter(distances.values())).keys())
    targets = sorted({r["target"] for r in rows})
    correlations = {
        (c["target"], c["chain"], c["kind"]): c for c in analysis.get("correlations", [])
    }
    fig, axes = plt.subplots(
        len(targets),
        len(kinds),
        figsize=(4.0 * len(kinds), 3.3 * len(targets)),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    for i, target in enumerate(targets):
        mine = [r for r in rows if r["target"] == target]
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            points = [
                (distances[r["group"]][kind], r)
                for r in mine
                if r["group"] in distances and distances[r["group"]].get(kind) is not None
            ]
            ax.axhline(0, color="grey", linewidth=0.8)
            for x, r in points:
                y = 100 * r["gain"]
                if r["ci_low"] is not None:
                    err = [[y - 100 * r["ci_low"]], [100 * r["ci_high"] - y]]
                    ax.errorbar(x, y, yerr=err, fmt="o", color="tab:blue", capsize=3)
                else:
                    ax.plot(x, y, "o", color="tab:blue")
                ax.annotate(r["group"], (x, y), textcoords="offset points", xytext=(4, 4))
            c = correlations.get((target, chosen[target], kind))
            stat = ""
            if c and c["pearson_r"] is not None:
                stat = f"\nr={c['pearson_r']:+.2f} (p={c['pearson_p']:.2f}), rho={c['spearman_rho']:+.2f}"
            elif c:
                stat = f"\n{c['n_langs']} languages: no correlation"
            ax.set_title(f"{target} after {chosen[target].rsplit(PHASE_SEP, 1)[0]}{stat}", fontsize=9)
            ax.set_xlabel(f"{kind} distance to English")
            if j == 0:
                ax.set_ylabel("gain over baseline (points)")
            ax.set_xlim(-0.05, 1.15)  # room for the label of a language at distance 1
    return fig


def _language_bars(analysis: Mapping[str, Any], chosen: Mapping[str, str]) -> Figure | None:
    rows = [r for r in _gains(analysis, "lang") if chosen.get(r["target"]) == r["chain"]]
    if not rows:
        return None
    plt = _pyplot()
    targets = sorted({r["target"] for r in rows})
    n_langs = max(sum(r["target"] == t for r in rows) for t in targets)
    fig, axes = plt.subplots(
        len(targets),
        1,
        figsize=(max(5.0, 1.0 + 0.45 * n_langs), 2.9 * len(targets)),
        squeeze=False,
        layout="constrained",
    )
    for ax, target in zip(axes[:, 0], targets, strict=True):
        mine = sorted(
            (r for r in rows if r["target"] == target), key=lambda r: _lang_key(r["group"])
        )
        x = range(len(mine))
        y = [100 * r["gain"] for r in mine]
        colors = ["tab:blue" if v >= 0 else "tab:red" for v in y]
        bars = ax.bar(x, y, color=colors, alpha=0.8)
        ax.bar_label(bars, fmt="%+.1f", fontsize=8, padding=2)
        with_ci = [(i, r) for i, r in enumerate(mine) if r["ci_low"] is not None]
        if with_ci:
            ax.errorbar(
                [i for i, _ in with_ci],
                [100 * r["gain"] for _, r in with_ci],
                yerr=[
                    [100 * (r["gain"] - r["ci_low"]) for _, r in with_ci],
                    [100 * (r["ci_high"] - r["gain"]) for _, r in with_ci],
                ],
                fmt="none",
                ecolor="black",
                capsize=3,
            )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xticks(list(x), [r["group"] for r in mine], rotation=90 if len(mine) > 20 else 0)
        seeds = max(r["n_seeds"] for r in mine)
        note = "95% CI over seeds" if seeds > 1 else "no interval"
        ax.set_title(
            f"{target}: {chosen[target]} vs baseline ({seeds} seed{'s' * (seeds != 1)}, {note})",
            fontsize=10,
        )
        ends = [0.0, *y] + [100 * r[k] for _, r in with_ci for k in ("ci_low", "ci_high")]
        pad = 0.12 * ((max(ends) - min(ends)) or 1.0)  # room for the value labels
        ax.set_ylim(min(ends) - pad, max(ends) + pad)
        ax.set_ylabel("gain (points)")
    return fig


# --- tables ------------------------------------------------------------------------------------


def _ci(row: Row, low: str = "ci_low", high: str = "ci_high") -> str:
    return ci(row.get(low), row.get(high))


def _best_table(analysis: Mapping[str, Any]) -> _Table:
    """The best chain per target under strict zero-shot selection."""
    return _Table(
        "Best chain per target (selected on English dev: strict zero-shot)",
        ("target", "chain", "en dev", "test avg", "baseline avg", "gain", "seeds", "configs"),
        [
            (
                r["target"],
                r["chain_name"],
                _pct(r["dev_en"]),
                _pct(r["avg"]),
                _pct(r["baseline_avg"]),
                _signed(r["gain_avg"]),
                _seeds(r),
                str(r["n_candidates"]),
            )
            for r in analysis.get("best_chains", [])
        ],
        "Paired by seed: test avg, baseline avg and gain are over the seeds the chain shares "
        "with the baseline (none shared: no gain), averaged over the languages tested for "
        "both, English included; 'seeds' counts the chain's seeds; x100.",
    )


def _selection_table(analysis: Mapping[str, Any]) -> _Table:
    """English-dev selection beside each language's own dev (an oracle)."""
    return _Table(
        "Selection: English dev vs each language's dev",
        ("target", "lang", "en-dev chain", "test", "gain", "lang-dev chain", "test", "gain"),
        [
            (
                r["target"],
                r["lang"],
                r["en_chain"] or "-",
                _pct(r["en_test"]),
                _signed(r["en_gain"]),
                r["lang_chain"] or "-",
                _pct(r["lang_test"]),
                _signed(r["lang_gain"]),
            )
            for r in analysis.get("selection", [])
        ],
        "Target-language dev selection is an oracle: it needs labelled data in each language. "
        "Each gain is over the baseline selected by the same rule; x100.",
    )


def _gains_table(analysis: Mapping[str, Any]) -> _Table:
    """Every chain's gain over the baseline, all languages together."""
    return _Table(
        "Gain over the baseline, all languages",
        ("target", "intermediate", "en dev", "langs", "seeds", "gain", "95% CI", "p", "unit"),
        [
            (
                r["target"],
                r["label"],
                _pct(r["dev_en"]),
                str(r["n_langs"]),
                str(r["n_seeds"]),
                _signed(r["gain"]),
                _ci(r),
                _p(r["p_value"]),
                r["unit"],
            )
            for r in sorted(_gains(analysis, ALL), key=lambda r: (r["target"], -(r["gain"] or 0)))
        ],
        "unit: what the interval resamples and the t-test pairs (see Methods).",
    )


def _group_table(grouping: str, rows: list[Row]) -> _Table:
    """The plotted chain's gain per language group of ``grouping``."""
    return _Table(
        f"Gain by {grouping} (plotted chain per target; English excluded)",
        (
            "target",
            "intermediate",
            grouping,
            "langs",
            "seeds",
            "gain",
            "95% CI",
            "p",
            "unit",
        ),
        [
            (
                r["target"],
                r["label"],
                r["group"],
                str(r["n_langs"]),
                str(r["n_seeds"]),
                _signed(r["gain"]),
                _ci(r),
                _p(r["p_value"]),
                r["unit"],
            )
            for r in sorted(rows, key=lambda r: (r["target"], r["group"]))
        ],
    )


def _distance_table(analysis: Mapping[str, Any], chosen: Mapping[str, str]) -> _Table:
    """Gain against typological distance, for the plotted chain."""
    return _Table(
        "Gain vs typological distance (plotted chain per target)",
        ("target", "intermediate", "distance", "langs", "pearson r", "p", "spearman rho", "p"),
        [
            (
                r["target"],
                r["label"],
                r["kind"],
                str(r["n_langs"]),
                _num(r["pearson_r"]),
                _p(r["pearson_p"]),
                _num(r["spearman_rho"]),
                _p(r["spearman_p"]),
            )
            for r in analysis.get("correlations", [])
            if chosen.get(r["target"]) == r["chain"]
        ],
        "Over transfer languages with a known distance; fewer than 3 give no correlation.",
    )


def _ordering_table(analysis: Mapping[str, Any]) -> _Table:
    """Same tasks in another order, or mixed."""
    return _Table(
        "Ordering effects: same intermediate tasks, different order or mixed",
        (
            "target",
            "chain",
            "minus chain",
            "kind",
            "seeds",
            "diff",
            "95% CI",
            "p",
            "seed sd",
            "exceeds seed noise",
        ),
        [
            (
                r["target"],
                r["chain"],
                r["chain_b"],
                r["kind"],
                str(r["n_seeds"]),
                _signed(r["diff"]),
                _ci(r),
                _p(r["p_value"]),
                _pct(r["seed_sd"]),
                "-" if r["exceeds_noise"] is None else ("yes" if r["exceeds_noise"] else "no"),
            )
            for r in analysis.get("ordering", [])
            if r["group"] == ALL
        ],
        "All languages; seed by seed differences. 'exceeds seed noise': paired t-test over "
        "seeds p < 0.05 (undecided with one seed).",
    )


def _translation_table(analysis: Mapping[str, Any]) -> _Table:
    """Machine-translated against English intermediate data."""
    return _Table(
        "Machine-translated vs English intermediate data",
        ("target", "translated chain", "english chain", "seeds", "diff", "95% CI", "p", "unit"),
        [
            (
                r["target"],
                r["chain"],
                r["english_chain"],
                str(r["n_seeds"]),
                _signed(r["diff"]),
                _ci(r),
                _p(r["p_value"]),
                r["unit"],
            )
            for r in analysis.get("translation", [])
            if r["group"] == ALL
        ],
        "All languages; only where both the translated and the English chain were run.",
    )


def _tables(analysis: Mapping[str, Any], chosen: Mapping[str, str]) -> list[_Table]:
    """Every table of the report, in reading order; ``chosen``: the plotted chain per target."""
    tables = [_best_table(analysis), _selection_table(analysis), _gains_table(analysis)]
    for grouping in GROUPINGS:
        rows = [r for r in _gains(analysis, grouping) if chosen.get(r["target"]) == r["chain"]]
        if rows:
            tables.append(_group_table(grouping, rows))
    return [
        *tables,
        _distance_table(analysis, chosen),
        _ordering_table(analysis),
        _translation_table(analysis),
        _benchmark(analysis.get("benchmark", [])),
    ]


def _seeds(result: Row) -> str:
    """The chain's seeds, and how many of them the gain pairs with the baseline if fewer."""
    n, paired = result["n_seeds"], result.get("n_paired_seeds", result["n_seeds"])
    if result.get("baseline_config_key") is None or paired == n:
        return str(n)
    return f"{n} ({paired} paired)"


def _benchmark(rows: Sequence[Row]) -> _Table:
    columns = [
        ("overall_xtreme", "all tasks", "XTREME"),
        ("overall_xtreme_r", "all categories", "XTREME-R"),
    ]
    columns += [
        ("category", n, n) for n in sorted({r["name"] for r in rows if r["level"] == "category"})
    ]
    columns += [("task", n, n) for n in sorted({r["name"] for r in rows if r["level"] == "task"})]
    cell = {(r["system"], r["level"], r["name"]): r for r in rows}
    systems = list(dict.fromkeys(r["system"] for r in rows))
    return _Table(
        "Benchmark aggregate, the XTREME way",
        ("system", *(title for _, _, title in columns)),
        [
            (
                system,
                *(
                    f"{_pct(c['score'])} ({_signed(c['gain'])})"
                    if c and c["score"] is not None
                    else "-"
                    for c in (cell.get((system, level, name)) for level, name, _ in columns)
                ),
            )
            for system in systems
        ],
        "Score x100 (gain over the baseline). Task: mean over its test languages of each "
        "benchmark metric, then over those metrics (QA: mean of EM and F1, as XTREME's "
        "evaluate.py). XTREME: mean over tasks (evaluate.py). XTREME-R: mean over the task "
        "categories (its leaderboard weighs categories equally). A category or overall score "
        "is shown only for a system with a score for every task of it in this experiment; '-' "
        "otherwise, since a mean over some of the tasks would not compare with the other rows.",
    )


# --- documents ---------------------------------------------------------------------------------


def _header(
    analysis: Mapping[str, Any], experiment: str, source: str, chosen: Mapping[str, str]
) -> list[str]:
    lines = [f"Experiment `{experiment}` from {source}."]
    if chosen:
        lines.append(
            "Plotted chain per target: "
            + "; ".join(f"{target}: {chain}" for target, chain in chosen.items())
            + "."
        )
    unknown = analysis.get("unknown_languages") or []
    lines.append(
        "Languages without typology/resource data: "
        + (", ".join(unknown) if unknown else "none")
        + "."
    )
    lines += [f"Note: {note}." for note in analysis.get("notes", [])]
    return lines


def _markdown(
    experiment: str,
    header: list[str],
    tables: list[_Table],
    plots: list[tuple[str, str, Path]],
    methods: str,
) -> str:
    out = [f"# raystilts report: {experiment}", "", *[f"{line}  " for line in header], ""]
    for title, caption, path in plots:
        out += [f"## {title}", "", f"![{title}]({path.name})", "", caption, ""]
    for t in tables:
        if not t.rows:
            continue
        out += [f"## {t.title}", ""]
        out.append("| " + " | ".join(t.headers) + " |")
        out.append("|" + "|".join("---" for _ in t.headers) + "|")
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        out += ["", t.caption, ""] if t.caption else [""]
    out += ["## Methods", "", methods, ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child, td.text { text-align: left; }
.caption { color: #555; font-size: 0.85em; max-width: 60em; }
img { max-width: 100%; }
"""


def _html(
    experiment: str,
    header: list[str],
    tables: list[_Table],
    plots: list[tuple[str, str, Path]],
    methods: str,
) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>raystilts report: {e(experiment)}</title><style>{_CSS}</style></head><body>",
        f"<h1>raystilts report: {e(experiment)}</h1>",
        *(f"<p>{e(line).replace('`', '')}</p>" for line in header),
    ]
    for title, caption, path in plots:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [
            f"<h2>{e(title)}</h2>",
            f'<img alt="{e(title)}" src="data:image/png;base64,{data}">',
            f'<p class="caption">{e(caption)}</p>',
        ]
    for t in tables:
        if not t.rows:
            continue
        head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
        body = "".join(
            "<tr>" + "".join(f"<td{_cls(c)}>{e(c)}</td>" for c in row) + "</tr>" for row in t.rows
        )
        parts += [f"<h2>{e(t.title)}</h2>", f"<table><tr>{head}</tr>{body}</table>"]
        if t.caption:
            parts.append(f'<p class="caption">{e(t.caption)}</p>')
    parts += ["<h2>Methods</h2>", f'<p class="caption">{e(methods)}</p>', "</body></html>", ""]
    return "\n".join(parts)


def _cls(cell: str) -> str:
    numeric = cell.lstrip("+-[<").replace(".", "", 1)[:1].isdigit() or cell == "-"
    return "" if numeric else ' class="text"'


def _safe_key(key: str) -> bool:
    return all(ch.isalnum() or ch in "_-./ " for ch in key)


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
