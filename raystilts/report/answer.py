"""A search's answer where an MLflow UI user looks: on the search's parent run.

    publish_answer(tracking_uri=uri, experiment="demo", parent_run_id=parent)

The parent run's description (``mlflow.note.content``, markdown, shown on the run's page)
holds the best chain per target under strict zero-shot selection (English dev) with its
per-language test scores against the baseline, and the run's artifacts hold the report
(``report.html``, ``report.md``, plots, ``analysis.json``; :mod:`raystilts.report`). The UI
link (:func:`raystilts.tracking.ui_url`) opens the experiment's runs table, where the parent
run is the row that the trials nest under.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raystilts.core.formats import SOURCE_LANG

if TYPE_CHECKING:
    from raystilts.analysis import TargetResult

__all__ = ["best_chains_markdown", "publish_answer"]


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:+.1f}"


def best_chains_markdown(
    results: Sequence[TargetResult], *, experiment: str, notes: Sequence[str] = ()
) -> str:
    """The best chain per target as markdown tables (scores x100), then ``notes``.

    >>> best_chains_markdown([], experiment="demo").splitlines()[0]
    '### demo: best chain per target'
    """
    lines = [f"### {experiment}: best chain per target", ""]
    if not results:
        lines.append("No target has a finished run (test scores) yet.")
    for r in results:
        where = "en" if SOURCE_LANG in r.languages else "avg"
        seeds = "seed" if r.n_seeds == 1 else "seeds"
        lines += [
            f"**{r.target}**: `{r.chain_name}` ({where} dev {r.metric} {_pct(r.dev_en)}, "
            f"{r.n_candidates} configs, {r.n_seeds} {seeds})",
            "",
            "| lang | best | baseline | gain |",
            "|---|---:|---:|---:|",
        ]
        langs = sorted(r.languages.keys() | r.baseline.keys(), key=lambda x: (x != SOURCE_LANG, x))
        lines += [
            f"| {lang} | {_pct(r.languages.get(lang))} | {_pct(r.baseline.get(lang))} "
            f"| {_signed(r.gains.get(lang))} |"
            for lang in langs
        ]
        lines += [
            f"| **avg** | {_pct(r.avg)} | {_pct(r.baseline_avg)} | {_signed(r.gain_avg)} |",
            "",
        ]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    lines.append("The full report (tables, plots, `analysis.json`) is in this run's artifacts.")
    return "\n".join(lines)


def publish_answer(*, tracking_uri: str, experiment: str, parent_run_id: str) -> list[str]:
    """Describe the parent run with the best chains and attach the report; returns the artifact
    file names. A selection that is not significant (:mod:`raystilts.analysis.selection`) is noted in
    both."""
    from raystilts.analysis import analyze, best_chains, runs_to_long
    from raystilts.analysis.selection import selection_checks, selection_notes
    from raystilts.core.languages import load_languages
    from raystilts.report import write_report
    from raystilts.tasks import CATALOG
    from raystilts.tracking import Tracker, load_runs

    tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment)
    long = runs_to_long(load_runs(tracking_uri=tracking_uri, experiment=experiment))
    notes = selection_notes(selection_checks(long))
    tracker.describe(
        parent_run_id, best_chains_markdown(best_chains(long), experiment=experiment, notes=notes)
    )
    analysis = analyze(
        long,
        tasks=CATALOG,
        languages=load_languages(),
        translations={n: t.translation_of for n, t in CATALOG.items() if t.translation_of},
    )
    numbers = analysis.to_json()
    numbers["notes"] = [*numbers.get("notes", []), *notes]  # the report's header shows them
    with tempfile.TemporaryDirectory(prefix="raystilts-report-") as tmp:
        write_report(numbers, out_dir=Path(tmp), experiment=experiment, source=tracking_uri)
        tracker.log_artifacts(parent_run_id, Path(tmp))
        return sorted(p.name for p in Path(tmp).rglob("*") if p.is_file())
