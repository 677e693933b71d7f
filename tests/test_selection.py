"""Selection significance (raystilts.analysis.selection) on hand-computable runs, and where it shows:
``analyze`` and ``report`` output."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_analysis import MNLI, XNLI, _trial, write_store

from raystilts.analysis import best_chains, runs_to_long
from raystilts.analysis.selection import selection_checks, selection_notes
from raystilts.cli import main

QQP = f"mini_qqp>{XNLI}"
TEST = {"en": 0.8, "qaa": 0.5}


def _runs(mnli_dev: tuple[float, ...]) -> list[object]:
    """Baseline dev 0.70/0.72, mini_qqp 0.60/0.61, mini_mnli as given, one run per seed."""
    runs = []
    for seed, (b, q) in enumerate([(0.70, 0.60), (0.72, 0.61)]):
        runs.append(_trial(f"b{seed}", XNLI, seed, test=TEST, dev_en=b))
        runs.append(_trial(f"q{seed}", QQP, seed, test=TEST, dev_en=q))
    runs += [_trial(f"m{s}", MNLI, s, test=TEST, dev_en=d) for s, d in enumerate(mnli_dev)]
    return runs


def test_best_within_one_seed_sd_of_the_baseline_is_not_significant() -> None:
    long = runs_to_long(_runs((0.71, 0.73)))  # type: ignore[arg-type]
    [check] = selection_checks(long)
    assert check.best == MNLI == best_chains(long)[0].chain_name
    # pooled sd: variances 2e-4 (baseline), 5e-5 (qqp), 2e-4 (mnli), one dof each
    assert check.seed_sd == pytest.approx((4.5e-4 / 3) ** 0.5)
    assert check.tied == ((XNLI, pytest.approx(0.71)),) and check.baseline_tied
    assert check.significant is False
    [note] = selection_notes([check])
    assert note.startswith(f"{XNLI}: selection not significant: {MNLI} (en dev 72.0)")
    assert f"{XNLI} 71.0 (the baseline among them)" in note


def test_clear_winner_is_significant_and_needs_no_note() -> None:
    [check] = selection_checks(runs_to_long(_runs((0.80, 0.81))))  # type: ignore[arg-type]
    assert check.best == MNLI and check.tied == () and check.significant is True
    assert selection_notes([check]) == []


def test_one_seed_per_chain_says_significance_is_unknown() -> None:
    runs = [r for r in _runs((0.80,)) if r.params["seed"] == "0"]  # type: ignore[attr-defined]
    [check] = selection_checks(runs_to_long(runs))
    assert check.seed_sd is None and check.significant is None
    [note] = selection_notes([check])
    assert "one seed per chain" in note and MNLI in note


def test_analyze_and_report_say_the_selection_is_not_significant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = write_store(tmp_path, _runs((0.71, 0.73)), "ties")  # type: ignore[arg-type]
    assert main(["analyze", "--experiment", "ties", "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert f"note: {XNLI}: selection not significant: {MNLI}" in printed
    out = tmp_path / "report"
    args = ["report", "--experiment", "ties", "--tracking-uri", uri, "--out", str(out)]
    assert main([*args, "--no-mlflow"]) == 0
    for name in ("report.md", "report.html"):
        assert "selection not significant" in (out / name).read_text(), name
