"""Published intermediate-task transfer tables (one normalised CSV format), read and checked.

    table = read_table("shared/data/transfer/pruksachatkun2020.csv")
    for target in table.targets():                  # "rte", or "xnli@de" with several languages
        cells = table.cells(target)                 # {intermediate: {seed: score}}, NaN kept

Format (``shared/data/transfer/README.md``): columns ``intermediate, target, language, seed,
score, baseline_score, metric, source_path``; one row per (intermediate, target, language,
seed); ``seed = mean`` rows are the study's own means (derived: skipped here);
``intermediate = NONE`` rows are baseline runs; an empty or ``nan`` score is a run without a
defined score (kept as NaN: out of means, but the cell exists); a row whose intermediate is its
target (self-transfer) is not a candidate for that target. Bad input is one
:class:`raystilts.core.errors.UserError` line naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from raystilts.core.errors import UserError
from raystilts.core.schema import (
    CHAIN_TAG,
    IMPORTED_FROM_TAG,
    IMPORTED_NOTE_TAG,
    KEY_SEP,
    KIND_TAG,
    MIX,
    PHASE_SEP,
    TARGET_TAG,
    chain_name,
    config_key,
    metric_key,
)

__all__ = [
    "BASELINE",
    "COLUMNS",
    "ImportedRun",
    "Row",
    "TransferTable",
    "imported_runs",
    "read_table",
]

BASELINE = "NONE"  # the intermediate of a baseline run (no intermediate task)
COLUMNS = ("intermediate", "target", "language", "seed", "score", "baseline_score", "metric")
_REQUIRED = ("intermediate", "target", "language", "seed", "score")
_MISSING = ("", "nan", "NaN", "NAN", "null", "None", "NA")  # a run without a defined score


@dataclass(frozen=True, slots=True)
class Row:
    intermediate: str
    target: str
    language: str
    seed: str
    score: float  # NaN: no defined score
    baseline_score: float | None
    metric: str
    line: int  # in the file, for messages


@dataclass(frozen=True, slots=True)
class TransferTable:
    """The usable rows of a table (means skipped), with what was skipped and why."""

    path: str
    rows: tuple[Row, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    languages: tuple[str, ...] = ()

    def targets(self) -> list[str]:
        """Replay targets: the target task, as ``task@lang`` when the table has several
        languages (each language is selected on separately). Sorted."""
        return sorted({self.target_name(r) for r in self.rows})

    def target_name(self, row: Row) -> str:
        return row.target if len(self.languages) == 1 else f"{row.target}@{row.language}"

    def cells(self, target: str) -> dict[str, dict[str, float]]:
        """{intermediate: {seed: score}} of ``target``: candidates only (no baseline, no
        self-transfer), in the table's order; a cell may hold NaN scores."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for r in self.rows:
            if self.target_name(r) == target and r.intermediate not in (BASELINE, r.target):
                out[r.intermediate][r.seed] = r.score
        return dict(out)

    def baseline(self, target: str) -> list[float]:
        """Finite baseline-run scores (``NONE`` rows) of ``target``."""
        return [
            r.score
            for r in self.rows
            if self.target_name(r) == target
            and r.intermediate == BASELINE
            and math.isfinite(r.score)
        ]


def read_table(path: str | Path) -> TransferTable:
    """Read and check a transfer table (module docstring: the format)."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # -sig: a spreadsheet's BOM
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); pass a transfer table CSV") from None
    try:
        with handle:
            return _read_rows(path, csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a UTF-8 CSV ({e}); save it as CSV UTF-8 and retry") from None


def _read_rows(path: Path, reader: csv.DictReader[str]) -> TransferTable:
    """The checked rows of an open table."""
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (has "
            f"{', '.join(reader.fieldnames or []) or 'none'}); see shared/data/transfer/README.md"
        )
    rows: list[Row] = []
    skipped: dict[str, int] = defaultdict(int)
    seen: dict[tuple[str, str, str, str], int] = {}
    for line, raw in enumerate(reader, start=2):
        row = _row(path, line, raw)
        if row is None:
            skipped["seed = mean (derived)"] += 1
            continue
        ident = (row.intermediate, row.target, row.language, row.seed)
        if ident in seen:
            raise UserError(
                f"{path}:{line}: the row of {'/'.join(ident)} repeats line {seen[ident]}; "
                "keep one row per (intermediate, target, language, seed)"
            )
        seen[ident] = line
        if row.intermediate == row.target:
            skipped["self-transfer (not a candidate)"] += 1
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows with a seed other than 'mean'; nothing to replay")
    languages = tuple(sorted({r.language for r in rows}))
    return TransferTable(
        path=str(path), rows=tuple(rows), skipped=dict(skipped), languages=languages
    )


def _row(path: Path, line: int, raw: dict[str, str | None]) -> Row | None:
    """One checked row; None for a ``seed = mean`` row."""
    values = {k: (raw.get(k) or "").strip() for k in (*COLUMNS, "source_path")}
    if None in raw:  # csv puts surplus fields under the key None
        raise UserError(f"{path}:{line}: more fields than columns; quote fields that hold commas")
    for key in ("intermediate", "target", "language", "seed"):
        if not values[key]:
            raise UserError(f"{path}:{line}: empty {key!r}; fill it in or delete the row")
        if key != "seed" and any(sep in values[key] for sep in (PHASE_SEP, MIX, KEY_SEP)):
            raise UserError(
                f"{path}:{line}: {key} {values[key]!r} holds one of {PHASE_SEP!r} {MIX!r} "
                f"{KEY_SEP!r}, which chain names and metric keys are made of; rename it"
            )
    if values["seed"] == "mean":
        return None
    return Row(
        intermediate=values["intermediate"],
        target=values["target"],
        language=values["language"],
        seed=values["seed"],
        score=_number(path, line, "score", values["score"]),
        baseline_score=(
            None
            if values["baseline_score"] in _MISSING
            else _number(path, line, "baseline_score", values["baseline_score"])
        ),
        metric=values["metric"],
        line=line,
    )


def _number(path: Path, line: int, key: str, text: str) -> float:
    if text in _MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"{path}:{line}: {key} {text!r} is not a number; write a number, or leave it empty "
            "for a run without a score"
        ) from None
    if math.isinf(value):
        raise UserError(f"{path}:{line}: {key} {text!r} is infinite; write a finite number")
    return value


@dataclass(frozen=True, slots=True)
class ImportedRun:
    """One published run as an MLflow run in the layout of a searched trial."""

    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    status: str  # FINISHED, or FAILED when the study reports no defined score


def imported_runs(table: TransferTable, *, source: str) -> tuple[list[ImportedRun], int]:
    """The table's runs, one per (intermediate, target, seed) with a score per language, and
    how many self-transfer rows were left out (not a chain). A study reports one score per
    run: it is logged as ``dev/{target}/{lang}/score`` (what selection reads) and as
    ``test/...`` (what gains read), tagged so; ``NONE`` rows are the empty chain."""

    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    left_out = 0
    for r in table.rows:
        if r.intermediate == r.target:
            left_out += 1
            continue
        groups[(r.intermediate, r.target, r.seed)].append(r)
    labels: dict[str, list[str]] = defaultdict(list)  # target -> its seed labels, in order
    for _, target, seed in groups:
        if seed not in labels[target]:
            labels[target].append(seed)
    runs = []
    for (inter, target, seed), rows in groups.items():
        tasks = [] if inter == BASELINE else [inter]
        chain = chain_name(tasks, target)
        scores = {r.language: r.score for r in rows if math.isfinite(r.score)}
        lang = "en" if "en" in scores else min(scores, default="en")
        # seed numbers: the labels when every label of the target is a number, else positions
        # (numbering only the non-numeric labels could collide with a numeric one: "2" and "b")
        numeric = all(label.isdigit() for label in labels[target])
        number = seed if numeric else str(labels[target].index(seed))
        params = {
            "target": target,
            "chain": chain,
            "intermediate": json.dumps(tasks),
            "chain_length": str(len(tasks)),
            "seed": number,
            "table_seed": seed,
            "metric": "score",
            "metric_description": rows[0].metric[:400],
            "selection_metric": metric_key("dev", target, lang, "score"),
            "config_key": config_key({"chain": chain}, target),
        }
        metrics = {
            metric_key(split, target, lg, "score"): v
            for lg, v in scores.items()
            for split in ("dev", "test")
        }
        tags = {
            TARGET_TAG: target,
            CHAIN_TAG: chain,
            KIND_TAG: "trial",
            IMPORTED_FROM_TAG: source,
            IMPORTED_NOTE_TAG: "the study's one score per run, logged as dev and test",
        }
        status = "FINISHED" if scores else "FAILED"
        runs.append(ImportedRun(f"{chain}#{seed}", params, metrics, tags, status))
    return runs, left_out
