"""From tracked runs to the paper's table: best chain per target and its zero-shot gains.

This is the only module that imports polars. It works on plain records (anything shaped like
:class:`raystilts.tracking.RunRecord`), so it never touches MLflow itself::

    records = load_runs(tracking_uri=uri, experiment="demo")      # raystilts.tracking
    results = best_chains(runs_to_long(records))
    print(render(results, "table"))

Selection is strict zero-shot: per target, every configuration (``config_key``: all
hyperparameters but the seed) whose runs finished evaluation is averaged over seeds, and the one
with the best *English dev* score of the target's primary metric wins; test scores in the other
languages are only reported. Gains are measured against the best baseline configuration (empty
chain) selected the same way. Scores are fractions in [0, 1]; the table shows them x100.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import polars as pl

__all__ = ["RunLike", "TargetResult", "best_chains", "render", "runs_to_long"]

SOURCE_LANG = "en"
# The logged per-task average language; recomputed here over the languages compared.
_AVG_LANG = "avg"

_LONG_SCHEMA = pl.Schema(
    {
        "run_id": pl.String(),
        "status": pl.String(),
        "target": pl.String(),
        "chain": pl.String(),
        "intermediate": pl.List(pl.String()),
        "seed": pl.Int64(),
        "config_key": pl.String(),
        "primary_metric": pl.String(),
        "split": pl.String(),
        "task": pl.String(),
        "lang": pl.String(),
        "metric": pl.String(),
        "value": pl.Float64(),
    }
)


class RunLike(Protocol):
    """What analysis needs from a run (``raystilts.tracking.RunRecord`` fits)."""

    @property
    def run_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


@dataclass(frozen=True, kw_only=True)
class TargetResult:
    """The selected chain of one target, its per-language test scores and gains.

    ``languages``, ``baseline`` and ``gains`` map a language to a mean over seeds of the test
    primary metric. ``avg``/``baseline_avg`` average over the languages both configurations were
    tested on (all of the chain's languages when there is no baseline run, then
    ``baseline_avg`` and ``gain_avg`` are NaN). English counts as one of the languages.
    """

    target: str
    metric: str
    chain: list[str]  # intermediate task names; [] is the baseline
    chain_name: str
    config_key: str
    n_seeds: int
    dev_en: float
    languages: dict[str, float]
    baseline: dict[str, float]
    gains: dict[str, float]
    avg: float
    baseline_avg: float
    gain_avg: float
    n_candidates: int
    baseline_config_key: str | None = None


def runs_to_long(records: Sequence[RunLike]) -> pl.DataFrame:
    """One row per (run, metric key) in the ``{split}/{task}/{lang}/{metric}`` layout.

    Columns: run_id, status, target, chain, intermediate (list[str]), seed, config_key,
    primary_metric, split, task, lang, metric, value. Keys of other shapes and the logged
    ``avg`` language are dropped; NaN values become null so they never win a max.
    ``target``/``chain`` fall back to the ``raystilts.*`` tags, ``intermediate`` to the chain.

    >>> from types import SimpleNamespace as R
    >>> run = R(run_id="r1", status="FINISHED", tags={},
    ...         params={"target": "x", "chain": "m>x", "seed": "0", "config_key": "k",
    ...                 "metric": "accuracy"},
    ...         metrics={"dev/x/en/accuracy": 0.5, "dev/x/avg/accuracy": 0.5, "loss": 1.0})
    >>> runs_to_long([run]).select("intermediate", "lang", "value").rows()
    [(['m'], 'en', 0.5)]
    """
    runs = pl.LazyFrame(
        {
            "run_id": [r.run_id for r in records],
            "status": [r.status for r in records],
            "target": [r.params.get("target", r.tags.get("raystilts.target")) for r in records],
            "chain": [r.params.get("chain", r.tags.get("raystilts.chain")) for r in records],
            "intermediate_json": [r.params.get("intermediate") for r in records],
            "seed": [r.params.get("seed") for r in records],
            "config_key": [r.params.get("config_key") for r in records],
            "primary_metric": [r.params.get("metric") for r in records],
        },
        schema={
            "run_id": pl.String,
            "status": pl.String,
            "target": pl.String,
            "chain": pl.String,
            "intermediate_json": pl.String,
            "seed": pl.String,
            "config_key": pl.String,
            "primary_metric": pl.String,
        },
    ).with_columns(
        intermediate=pl.coalesce(
            pl.col("intermediate_json").str.json_decode(pl.List(pl.String)),
            pl.col("chain").str.split(">").list.slice(0, pl.col("chain").str.count_matches(">")),
        ),
        seed=pl.col("seed").cast(pl.Int64, strict=False),
    )
    metrics = pl.LazyFrame(
        {
            "run_id": [r.run_id for r in records for _ in r.metrics],
            "key": [key for r in records for key in r.metrics],
            "value": [float(v) for r in records for v in r.metrics.values()],
        },
        schema={"run_id": pl.String, "key": pl.String, "value": pl.Float64},
    )
    parts = pl.col("parts")
    return (
        metrics.with_columns(parts=pl.col("key").str.split("/"))
        .filter(parts.list.len() == 4)
        .with_columns(
            split=parts.list.get(0),
            task=parts.list.get(1),
            lang=parts.list.get(2),
            metric=parts.list.get(3),
            value=pl.col("value").fill_nan(None),
        )
        .filter(pl.col("lang") != _AVG_LANG)
        .join(runs, on="run_id", how="inner")
        .select(list(_LONG_SCHEMA))
        .cast(_LONG_SCHEMA)
        .collect()
    )


def best_chains(long: pl.DataFrame) -> list[TargetResult]:
    """Select the best configuration per target on English dev; report test gains.

    Candidates of a target are the configurations with at least one run that has test scores
    for the target's primary metric (runs stopped early by ASHA have dev scores only and are
    ignored, also inside an otherwise finished configuration). Scores are averaged per seed,
    then over seeds. Ties on English dev go to fewer phases, then the chain name.
    Results are sorted by target.
    """
    keys = ["target", "config_key"]
    scores = (
        long.lazy()
        .filter(
            pl.col("target").is_not_null(),
            pl.col("config_key").is_not_null(),
            pl.col("task") == pl.col("target"),
            pl.col("metric") == pl.col("primary_metric"),
        )
        .with_columns(finished=(pl.col("split") == "test").any().over("run_id"))
        .filter(pl.col("finished"))
        .group_by(*keys, "split", "lang", "seed")
        .agg(
            pl.col("value").mean(),
            pl.col("chain", "intermediate", "primary_metric").first(),
        )
        .group_by(*keys, "split", "lang")
        .agg(
            pl.col("value").mean(),
            pl.col("seed").n_unique().alias("n_seeds"),
            pl.col("chain", "intermediate", "primary_metric").first(),
        )
    )
    tests = scores.filter(pl.col("split") == "test").select(*keys, "lang", test="value")
    configs = (
        scores.group_by(keys)
        .agg(
            pl.col("chain", "intermediate", "primary_metric").first(),
            pl.col("n_seeds").max(),
            dev_en=pl.col("value")
            .filter(pl.col("split") == "dev", pl.col("lang") == SOURCE_LANG)
            .first(),
        )
        .with_columns(
            phases=pl.col("chain").str.count_matches(">"),
            n_candidates=pl.len().over("target"),
        )
        .filter(pl.col("dev_en").is_not_null())
        .sort(
            "target",
            "dev_en",
            "phases",
            "chain",
            "config_key",
            descending=[False, True, False, False, False],
        )
    )
    best = configs.group_by("target", maintain_order=True).first()
    baseline = (
        configs.filter(pl.col("phases") == 0)
        .group_by("target", maintain_order=True)
        .first()
        .select("target", baseline_config_key="config_key")
    )
    per_lang = (
        tests.join(best.select(keys), on=keys, how="semi")
        .drop("config_key")
        .join(
            tests.join(baseline, left_on=keys, right_on=["target", "baseline_config_key"]).select(
                "target", "lang", baseline="test"
            ),
            on=["target", "lang"],
            how="full",
            coalesce=True,
        )
        .with_columns(gain=pl.col("test") - pl.col("baseline"))
    )
    both = pl.col("gain").is_not_null()
    has_baseline = pl.col("baseline").is_not_null().any()
    averages = per_lang.group_by("target").agg(
        avg=pl.when(has_baseline)
        .then(pl.col("test").filter(both).mean())
        .otherwise(pl.col("test").mean()),
        baseline_avg=pl.col("baseline").filter(both).mean(),
    )
    summary = (
        best.join(baseline, on="target", how="left")
        .join(averages, on="target", how="left")
        .sort("target")
        .collect()
    )
    lang_rows = per_lang.sort("target", "lang").collect()
    results = []
    for row in summary.iter_rows(named=True):
        rows = lang_rows.filter(pl.col("target") == row["target"])
        avg, baseline_avg = _nan_if_none(row["avg"]), _nan_if_none(row["baseline_avg"])
        results.append(
            TargetResult(
                target=row["target"],
                metric=row["primary_metric"],
                chain=list(row["intermediate"] or []),
                chain_name=row["chain"],
                config_key=row["config_key"],
                n_seeds=int(row["n_seeds"]),
                dev_en=float(row["dev_en"]),
                languages=_column_dict(rows, "test"),
                baseline=_column_dict(rows, "baseline"),
                gains=_column_dict(rows, "gain"),
                avg=avg,
                baseline_avg=baseline_avg,
                gain_avg=avg - baseline_avg,
                n_candidates=int(row["n_candidates"]),
                baseline_config_key=row["baseline_config_key"],
            )
        )
    return results


def render(results: Sequence[TargetResult], fmt: Literal["table", "json", "csv"]) -> str:
    """Format results: ``table`` for people (scores x100), ``json``/``csv`` raw fractions.

    JSON is a list of objects (every :class:`TargetResult` field; NaN becomes null). CSV has one
    row per (target, language): target, chain_name, metric, lang, test, baseline, gain.
    """
    if fmt == "json":
        return json.dumps([_json_safe(asdict(r)) for r in results], indent=2)
    if fmt == "csv":
        return _csv(results)
    if fmt == "table":
        if not results:
            return "no target has a finished run (test scores) yet"
        return "\n\n".join(_table(r) for r in results)
    raise ValueError(f"format {fmt!r} must be one of table, json, csv")


def _csv(results: Sequence[TargetResult]) -> str:
    rows = [
        {
            "target": r.target,
            "chain_name": r.chain_name,
            "metric": r.metric,
            "lang": lang,
            "test": r.languages.get(lang),
            "baseline": r.baseline.get(lang),
            "gain": r.gains.get(lang),
        }
        for r in results
        for lang in _lang_order(r.languages.keys() | r.baseline.keys())
    ]
    schema = {
        "target": pl.String,
        "chain_name": pl.String,
        "metric": pl.String,
        "lang": pl.String,
        "test": pl.Float64,
        "baseline": pl.Float64,
        "gain": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row").write_csv()


def _table(r: TargetResult) -> str:
    seeds = "seed" if r.n_seeds == 1 else "seeds"
    configs = "config" if r.n_candidates == 1 else "configs"
    header = (
        f"{r.target}  best chain: {r.chain_name}  (en dev {r.metric} {_pct(r.dev_en)}, "
        f"{r.n_candidates} {configs}, {r.n_seeds} {seeds})"
    )
    lines = [header]
    cells = [
        (
            lang,
            _pct(r.languages.get(lang)),
            _pct(r.baseline.get(lang)),
            _gain(r.gains.get(lang)),
        )
        for lang in _lang_order(r.languages.keys() | r.baseline.keys())
    ]
    cells.append((_AVG_LANG, _pct(r.avg), _pct(r.baseline_avg), _gain(r.gain_avg)))
    width = max(len(c[0]) for c in [*cells, ("lang",)])
    lines.append(f"  {'lang':<{width}}  {'best':>6}  {'baseline':>8}  {'gain':>6}")
    lines += [f"  {a:<{width}}  {b:>6}  {c:>8}  {d:>6}" for a, b, c, d in cells]
    if not r.baseline:
        lines.append(f"  no baseline run for {r.target}: gains unavailable")
    return "\n".join(lines)


def _lang_order(langs: set[str] | frozenset[str]) -> list[str]:
    """English (the source language) first, then alphabetical."""
    return sorted(langs, key=lambda lang: (lang != SOURCE_LANG, lang))


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _gain(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:+.1f}"


def _column_dict(rows: pl.DataFrame, column: str) -> dict[str, float]:
    present = rows.filter(pl.col(column).is_not_null())
    return dict(zip(present["lang"].to_list(), present[column].to_list(), strict=True))


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
