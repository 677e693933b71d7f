"""From tracked runs to the paper's tables: best chains, gains with honest statistics, orderings.

This is the only module that imports polars. It works on plain records (anything shaped like
:class:`raystilts.tracking.store.RunRecord`), so it never touches MLflow itself::

    records = load_runs(tracking_uri=uri, experiment="demo")      # raystilts.tracking.store
    results = best_chains(runs_to_long(records))
    print(render(results, "table"))
    full = analyze(runs_to_long(records), tasks=CATALOG, languages=load_languages())
    print(render_analysis(full, "table"))

Selection is strict zero-shot: per target, every configuration (``config_key``: all
hyperparameters but the seed) whose runs finished evaluation is averaged over seeds, and the one
with the best *English dev* score of the target's primary metric wins; test scores in the other
languages are only reported. Gains are measured against the best baseline configuration (empty
chain) selected the same way. Scores are fractions in [0, 1]; tables show them x100.

Statistics (:data:`METHODS` says the same in the report):

- a *gain* pairs a chain's run with the baseline's run **of the same seed value** on the same
  language: ``diff = chain - baseline``. Only FINISHED runs with test scores count.
- per language, the interval is a 95% percentile bootstrap (``scipy.stats.bootstrap``) of the mean
  diff **resampling seeds**, and ``p`` is a paired t-test over seeds (``scipy.stats.ttest_1samp``
  of the diffs, identical to ``ttest_rel`` of chain vs baseline). One seed: no interval, no test.
- for a group of languages, each seed's diffs are first averaged over the group's languages and
  the seeds are resampled; with a single seed the *languages* are resampled and paired instead
  (column ``unit`` says which), which measures spread across languages, not seed noise.
- a difference identical in every unit has no spread: ``p`` is the t-test's limit, 0 (or 1
  when the difference is 0).
- with 3 seeds a percentile bootstrap interval is roughly [min, max] of the three seed means and
  tends to be too narrow: read it as descriptive.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, cast

import numpy as np
import polars as pl
from scipy import stats

from raystilts.core.formats import ALL, BASELINE_SYSTEM, BEST_SYSTEM, GROUPINGS, SOURCE_LANG
from raystilts.core.formats import ci as _ci
from raystilts.core.formats import num as _num
from raystilts.core.formats import p_value as _p
from raystilts.core.formats import pct as _pct
from raystilts.core.formats import signed as _gain
from raystilts.core.schema import (
    AVG,
    CHAIN_TAG,
    KEY_FIELDS,
    KEY_SEP,
    MIX,
    OUTCOME_TAG,
    PHASE_SEP,
    TARGET_TAG,
    parse_metric_key,
)

__all__ = [
    "DISTANCE_KINDS",
    "GROUPINGS",
    "METHODS",
    "Analysis",
    "LanguageLike",
    "RunLike",
    "TargetResult",
    "TaskLike",
    "analyze",
    "benchmark_scores",
    "best_chains",
    "describe_unused",
    "distance_correlations",
    "gains",
    "language_groups",
    "ordering_effects",
    "render",
    "render_analysis",
    "runs_to_long",
    "selection_comparison",
    "translation_effects",
    "unknown_languages",
]

# The logged per-task average (schema.AVG) is recomputed here over the languages compared.
_AVG_LANG = AVG

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
    """What analysis needs from a run (``raystilts.tracking.store.RunRecord`` fits)."""

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
    primary metric. Gains are paired by seed, as in :func:`gains`: where the chain and the
    baseline share seeds on a language, both scores are means over those shared seeds only
    (``n_paired_seeds`` says how many the two configurations share) and the gain is their
    difference; where they share none, each score is its own mean over seeds and that language
    has no gain. ``avg``/``baseline_avg`` average over the languages with a gain (all of the
    chain's languages when there is none, then ``baseline_avg`` and ``gain_avg`` are NaN).
    English counts as one of the languages. When every shared seed was tested on the same
    languages, ``gain_avg`` equals the gain of :func:`gains` with ``grouping="all"``.
    ``n_seeds`` and ``dev_en`` describe the selection, over all of the chain's seeds.
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
    n_paired_seeds: int = 0  # seeds both the chain and the baseline were tested with


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
    runs = _runs_frame(records)
    # Millions of (run, key, value) rows but a few thousand distinct keys: each key is split
    # once, rows carry the run's index (not its id string), and chain.from_iterable flattens
    # the dicts in C instead of three nested comprehensions.
    flat = itertools.chain.from_iterable
    metrics = pl.LazyFrame(
        {
            "run": np.repeat(
                np.arange(len(records), dtype=np.uint32), [len(r.metrics) for r in records]
            ),
            "key": pl.Series(list(flat(r.metrics for r in records)), dtype=pl.String),
            "value": pl.Series(
                list(flat(r.metrics.values() for r in records)),
                dtype=pl.Float64,
                strict=False,
            ),
        }
    )
    parts = pl.col("parts")
    layout = (
        metrics.select(pl.col("key").unique())
        .with_columns(parts=pl.col("key").str.split(KEY_SEP))
        .filter(parts.list.len() == len(KEY_FIELDS))  # parse_metric_key, vectorised
        .select("key", **{field: parts.list.get(i) for i, field in enumerate(KEY_FIELDS)})
        .filter(pl.col("lang") != AVG)
    )
    return (
        metrics.join(layout, on="key", how="inner")
        .with_columns(value=pl.col("value").fill_nan(None))
        .join(runs.with_row_index("run"), on="run", how="inner")
        .select(list(_LONG_SCHEMA))
        .cast(_LONG_SCHEMA)
        .collect()
    )


def _runs_frame(records: Sequence[RunLike]) -> pl.LazyFrame:
    """One row per run: its id, status and the params the analyses group by (tags and the
    chain as fallbacks), ``intermediate`` as a list of phases."""
    return pl.LazyFrame(
        {
            "run_id": [r.run_id for r in records],
            "status": [r.status for r in records],
            "target": [r.params.get("target", r.tags.get(TARGET_TAG)) for r in records],
            "chain": [r.params.get("chain", r.tags.get(CHAIN_TAG)) for r in records],
            "intermediate_json": [r.params.get("intermediate") for r in records],
            "seed": [r.params.get("seed") for r in records],
            "config_key": [r.params.get("config_key") or derived_config_key(r) for r in records],
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
            pl.col("chain")
            .str.split(PHASE_SEP)
            .list.slice(0, pl.col("chain").str.count_matches(PHASE_SEP)),
        ),
        seed=pl.col("seed").cast(pl.Int64, strict=False),
    )


def derived_config_key(run: RunLike) -> str:
    """The configuration of a run logged without ``config_key`` (by hand, or by an older
    tool): its target, chain and hyperparameters, i.e. every param but the seed, hashed; so
    its seeds still group, and it is never dropped for want of a key."""
    import hashlib
    import json

    params = {k: v for k, v in run.params.items() if k not in ("seed", "table_seed")}
    params.setdefault("target", run.tags.get(TARGET_TAG, ""))
    params.setdefault("chain", run.tags.get(CHAIN_TAG, ""))
    blob = json.dumps(params, sort_keys=True)
    return "derived-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


# Why a run did not finish, in words a newcomer does not read as a failure: ASHA stopping a weak
# trial is the search working (it ends KILLED in MLflow, with no test scores to report).
_UNFINISHED = {
    "stopped_early": "stopped early by the ASHA scheduler (as intended; no final evaluation)",
    "interrupted": "interrupted by a stopped search (--resume continues them)",
}


def unused_runs(records: Sequence[RunLike]) -> list[tuple[str, str]]:
    """(run id, reason) of each run the analyses cannot use: not FINISHED, no target, or no
    score of its target's metric (``param metric``) in the ``{split}/{task}/{lang}/{metric}``
    layout, or no test score (selection needs dev, gains need test)."""
    out: list[tuple[str, str]] = []
    for r in records:
        target = r.params.get("target", r.tags.get(TARGET_TAG))
        metric = r.params.get("metric")
        parts = [p for p in map(parse_metric_key, r.metrics) if p is not None]
        own = [p for p in parts if p.task == target and p.metric == metric]
        if r.status != "FINISHED":
            reason = _UNFINISHED.get(r.tags.get(OUTCOME_TAG, ""), f"status {r.status}")
        elif not target:
            reason = "no target param or raystilts.target tag"
        elif not own:
            reason = f"no {target} {metric} score as split/{target}/lang/{metric}"
        elif not any(p.split == "test" for p in own):
            reason = "no test score"
        else:
            continue
        out.append((r.run_id, reason))
    return out


def describe_unused(records: Sequence[RunLike], *, shown: int = 3) -> str | None:
    """One line counting and naming the runs :func:`unused_runs` finds (None: all used);
    per reason its count and the first ``shown`` run ids."""
    unused = unused_runs(records)
    if not unused:
        return None
    by_reason: dict[str, list[str]] = {}
    for run_id, reason in unused:
        by_reason.setdefault(reason, []).append(run_id)
    parts = [
        f"{reason}: {len(ids)} ({', '.join(ids[:shown])}{', ...' if len(ids) > shown else ''})"
        for reason, ids in by_reason.items()
    ]
    return f"analyze: {len(unused)} of {len(records)} runs not used; " + "; ".join(parts)


def best_chains(long: pl.DataFrame) -> list[TargetResult]:
    """Select the best configuration per target on English dev; report test gains.

    Candidates of a target are the configurations with at least one FINISHED run that has test
    scores for the target's primary metric (runs stopped early by ASHA have dev scores only,
    failed runs may have test scores of a broken trial: both are ignored, also inside an
    otherwise finished configuration). Scores are averaged per seed,
    then over seeds. Ties on English dev go to fewer phases, then the chain name.
    Results are sorted by target.
    """
    per_seed, meta = _finished_per_seed(long)
    configs = _ranked_configs(per_seed, meta)
    best = configs.group_by("target", maintain_order=True).first()
    baseline = (
        configs.filter(pl.col("phases") == 0)
        .group_by("target", maintain_order=True)
        .first()
        .select("target", baseline_config_key="config_key")
    )
    per_lang, averages, shared = _test_gains(per_seed, best, baseline)
    summary = (
        best.join(baseline, on="target", how="left")
        .join(averages, on="target", how="left")
        .join(shared, on="target", how="left")
        .sort("target")
        .collect()
    )
    lang_rows = per_lang.sort("target", "lang").collect()
    return [
        _target_result(row, lang_rows.filter(pl.col("target") == row["target"]))
        for row in summary.iter_rows(named=True)
    ]


_CONFIG = ["target", "config_key"]  # what identifies a configuration in the analyses


def _finished_per_seed(long: pl.DataFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Per (configuration, split, language, seed): the mean score of its finished runs with
    test scores of the target's primary metric; and each configuration's text (chain...)."""
    finished = (
        long.lazy()
        .filter(
            pl.col("status") == "FINISHED",
            pl.col("target").is_not_null(),
            pl.col("config_key").is_not_null(),
            pl.col("task") == pl.col("target"),
            pl.col("metric") == pl.col("primary_metric"),
        )
        .filter((pl.col("split") == "test").any().over("run_id"))
    )
    # The only passes over the long frame (millions of rows), run once and kept: the plans
    # below read per_seed several times and are collected twice, and each read of a lazy
    # per_seed would filter and group the long frame again.
    per_seed, meta = (
        frame.lazy()
        for frame in pl.collect_all(
            [
                finished.group_by(*_CONFIG, "split", "lang", "seed").agg(pl.col("value").mean()),
                _config_meta(finished),
            ]
        )
    )
    return per_seed, meta


def _ranked_configs(per_seed: pl.LazyFrame, meta: pl.LazyFrame) -> pl.LazyFrame:
    """Every configuration with an English dev score, best first within its target (ties:
    fewer phases, then the chain name), with its seed count and the target's candidates."""
    scores = per_seed.group_by(*_CONFIG, "split", "lang").agg(
        pl.col("value").mean(), pl.col("seed").n_unique().alias("n_seeds")
    )
    return (
        scores.group_by(_CONFIG)
        .agg(pl.col("n_seeds").max(), dev_en=_selection_score("first"))
        # per-config text joined once per config, not onto every (split, language) row
        .join(meta, on=_CONFIG)
        .with_columns(
            phases=pl.col("chain").str.count_matches(PHASE_SEP),
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
        .collect()  # kept: best, baseline and the two collects of best_chains all read it
        .lazy()
    )


def _test_gains(
    per_seed: pl.LazyFrame, best: pl.LazyFrame, baseline: pl.LazyFrame
) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """The best configuration's test scores against the baseline's, on the seeds both ran:
    per (target, language), the target's averages, and the number of paired seeds."""
    tests = per_seed.filter(pl.col("split") == "test", pl.col("value").is_not_null()).select(
        *_CONFIG, "lang", "seed", "value"
    )
    chain_runs = tests.join(best.select(_CONFIG), on=_CONFIG, how="semi").select(
        "target", "lang", "seed", a="value"
    )
    base_runs = tests.join(
        baseline, left_on=_CONFIG, right_on=["target", "baseline_config_key"]
    ).select("target", "lang", "seed", b="value")
    per_lang = (
        _paired_means(chain_runs, base_runs, ["target", "lang"])
        .rename({"a": "test", "b": "baseline"})
        .collect()  # kept: both collects of best_chains read it
        .lazy()
    )
    shared = (
        chain_runs.select("target", "seed")
        .unique()
        .join(base_runs.select("target", "seed").unique(), on=["target", "seed"])
        .group_by("target")
        .agg(n_paired_seeds=pl.len())
    )
    both = pl.col("gain").is_not_null()
    averages = per_lang.group_by("target").agg(
        avg=pl.when(both.any())
        .then(pl.col("test").filter(both).mean())
        .otherwise(pl.col("test").mean()),
        baseline_avg=pl.col("baseline").filter(both).mean(),
    )
    return per_lang, averages, shared


def _target_result(row: dict[str, Any], rows: pl.DataFrame) -> TargetResult:
    """One target's summary row and its per-language rows as a :class:`TargetResult`."""
    avg, baseline_avg = _nan_if_none(row["avg"]), _nan_if_none(row["baseline_avg"])
    return TargetResult(
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
        n_paired_seeds=int(row["n_paired_seeds"] or 0),
    )


def _paired_means(a: pl.LazyFrame, b: pl.LazyFrame, by: Sequence[str]) -> pl.LazyFrame:
    """Per ``by``: means of ``a`` and ``b`` over the seeds both have, and ``gain = a - b``.

    ``a`` and ``b`` hold one value per (``by``, seed) in columns ``a``/``b``. Where the two
    share no seed (a run without a seed never pairs), each is its own mean over seeds and the
    gain is null: a difference of means over different seeds would mix seed noise into it.
    """
    by = list(by)
    paired = pl.col("a").is_not_null() & pl.col("b").is_not_null()

    def mean(column: str) -> pl.Expr:
        values = pl.col(column)
        return pl.when(paired.any()).then(values.filter(paired).mean()).otherwise(values.mean())

    return (
        a.join(b, on=[*by, "seed"], how="full", coalesce=True)
        .group_by(by)
        .agg(a=mean("a"), b=mean("b"), pairs=paired.sum())
        .with_columns(gain=pl.when(pl.col("pairs") > 0).then(pl.col("a") - pl.col("b")))
        .drop("pairs")
    )


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
        f"{r.target}  best chain: {r.chain_name}  "
        f"({'en' if SOURCE_LANG in r.languages else 'avg'} dev {r.metric} {_pct(r.dev_en)}, "
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
    elif not r.gains:
        lines.append(f"  {_unpaired(r)}: gains unavailable")
    elif r.n_paired_seeds != r.n_seeds:
        shared = "seed" if r.n_paired_seeds == 1 else "seeds"
        lines.append(
            f"  scores and gains over the {r.n_paired_seeds} {shared} shared with the baseline"
        )
    return "\n".join(lines)


def _unpaired(r: TargetResult) -> str:
    """Why a target with a baseline run has no gain."""
    if r.n_paired_seeds == 0:
        return f"{r.target}: the chain and the baseline share no seed"
    return f"{r.target}: the chain and the baseline share no (seed, language) test score"


def _lang_order(langs: set[str] | frozenset[str]) -> list[str]:
    """English (the source language) first, then alphabetical."""
    return sorted(langs, key=lambda lang: (lang != SOURCE_LANG, lang))


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


# ---------------------------------------------------------------------------------------------
# Issue 5: gains with intervals, language groups, distances, orderings, translated data, XTREME.

DISTANCE_KINDS = ("syntactic", "genetic", "geographic")
Grouping = Literal["lang", "all", "resource", "family", "script", "distance"]
UNKNOWN = "unknown"  # a language the language table does not have
MISSING = "n/a"  # a known language without a value for the grouping (no resource class...)
CONFIDENCE = 0.95
ALPHA = 0.05  # "exceeds seed noise": paired t-test over seeds below this
N_RESAMPLES = 2000  # percentile bootstrap; more resamples cannot make 3 seeds more informative
_BOOT_BATCH = 50  # resamples per batch: memory is groups x batch x n floats
DEFAULT_BIN_EDGES = (1 / 3, 2 / 3)  # distance bins: near / mid / far (distances lie in [0, 1])
_TIE = 1e-12  # a paired difference with less spread than this is constant: no t-test

METHODS = f"""\
Gains pair each chain run with the baseline run (empty chain) of the same seed value, on the \
same language: diff = chain - baseline on the test split, primary metric; the chain's and the \
baseline's scores shown beside a gain are means over the same paired seeds, and a chain that \
shares no seed with the baseline has no gain. Only FINISHED runs with test scores count; each chain is represented by its configuration with the best English dev \
score (strict zero-shot selection), the baseline likewise. Per language: mean diff over seeds, a \
{CONFIDENCE:.0%} percentile bootstrap interval resampling seeds (scipy.stats.bootstrap, \
{N_RESAMPLES} resamples) and a paired t-test over seeds (scipy.stats.ttest_1samp of the diffs = \
ttest_rel of chain vs baseline). Per language group: each seed's diffs are averaged over the \
group's languages (English excluded: groups describe transfer languages), then seeds are \
resampled and tested. With one seed there is no seed interval: the group's languages are \
resampled and paired instead (unit = languages), which measures spread across languages, not \
seed noise; a single language with a single seed gets no interval. With 3 seeds the percentile \
interval is close to the range of the 3 seed means and tends to be too narrow; the smallest \
p-values need the t-test's normality assumption. A difference identical in every seed (or \
language) is the t-test's limit: p = 0, or p = 1 when it is zero. Correlations: Pearson and Spearman (scipy.stats) \
of each transfer language's mean gain with its typological distance to English, over the \
languages with a known distance. Orderings and translated data: the same paired statistics on \
the difference between two chains' test scores, seed by seed; 'exceeds seed noise' means the \
paired t-test over seeds gives p < {ALPHA}."""


class LanguageLike(Protocol):
    """What analysis needs to know of a language (``raystilts.core.languages.Language`` fits)."""

    @property
    def family(self) -> str | None: ...
    @property
    def script(self) -> str | None: ...
    @property
    def resource_group(self) -> str | None: ...
    def distance(self, kind: str) -> float | None: ...


class TaskLike(Protocol):
    """What the benchmark aggregate needs of a target (``raystilts.tasks.catalog.TaskSpec`` fits)."""

    @property
    def category(self) -> str | None: ...
    @property
    def benchmark_metrics(self) -> tuple[str, ...]: ...


def _evaluated(long: pl.DataFrame) -> pl.LazyFrame:
    """Primary-metric scores of each target from FINISHED runs that reached the test evaluation.

    One row per (target, config_key, split, lang, seed); duplicate runs of a seed are averaged.
    Runs without a seed cannot be paired and are left out.
    """
    finished = (
        long.lazy()
        .filter(
            pl.col("status") == "FINISHED",
            pl.col("target").is_not_null(),
            pl.col("config_key").is_not_null(),
            pl.col("seed").is_not_null(),
            pl.col("task") == pl.col("target"),
            pl.col("metric") == pl.col("primary_metric"),
            pl.col("value").is_not_null(),
        )
        .filter((pl.col("split") == "test").any().over("run_id"))
    )
    return (
        finished.group_by("target", "config_key", "split", "lang", "seed")
        .agg(pl.col("value").mean())
        .join(_config_meta(finished).drop("primary_metric"), on=["target", "config_key"])
    )


def _config_meta(frame: pl.LazyFrame) -> pl.LazyFrame:
    """chain, intermediate and primary metric of each (target, config_key)."""
    return frame.group_by("target", "config_key").agg(
        pl.col("chain", "intermediate", "primary_metric").first()
    )


def _selection_score(how: Literal["first", "mean"]) -> pl.Expr:
    """The score a configuration is selected on, inside a per-configuration ``agg``: English
    dev (the ``how`` of those rows: strict zero-shot), or for a target with no English set
    (zero-shot retrieval: BUCC, Tatoeba) the dev mean over its languages, as the search does
    (raystilts.tasks.catalog.selection_key)."""
    dev = pl.col("split") == "dev"
    is_en = dev & (pl.col("lang") == SOURCE_LANG)
    return (
        pl.when(is_en.any())
        .then(getattr(pl.col("value").filter(is_en), how)())
        .otherwise(pl.col("value").filter(dev).mean())
    )


def _configs(scores: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (target, config_key): its chain, English dev score (mean over seeds)."""
    return (
        scores.group_by("target", "config_key")
        .agg(
            pl.col("chain", "intermediate").first(),
            dev_en=_selection_score("mean"),
        )
        .with_columns(
            phases=pl.col("intermediate").list.len(),
            label=pl.col("intermediate").list.join(PHASE_SEP),
        )
    )


def _pick(frame: pl.LazyFrame, by: Sequence[str], score: str) -> pl.LazyFrame:
    """Best row per ``by`` on ``score``; ties go to fewer phases, then chain name, config key
    (the rule of :func:`best_chains`)."""
    return (
        frame.filter(pl.col(score).is_not_null())
        .sort(score, "phases", "chain", "config_key", descending=[True, False, False, False])
        .group_by(by, maintain_order=True)
        .first()
    )


def _chain_scores(scores: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Test scores per (target, chain, lang, seed) of each chain's English-dev-selected config,
    and the same for the selected baseline (``lang, seed, baseline`` per target)."""
    configs = _configs(scores)
    reps = _pick(configs, ["target", "chain"], "dev_en").filter(pl.col("phases") > 0)
    base = _pick(configs.filter(pl.col("phases") == 0), ["target"], "dev_en")
    test = scores.filter(pl.col("split") == "test").select(
        "target", "config_key", "lang", "seed", "value"
    )
    chains = test.join(
        reps.select("target", "config_key", "chain", "label", "intermediate", "dev_en"),
        on=["target", "config_key"],
    )
    baseline = test.join(base.select("target", "config_key"), on=["target", "config_key"]).select(
        "target", "lang", "seed", baseline="value"
    )
    return chains, baseline


def language_groups(
    codes: Sequence[str],
    languages: Mapping[str, LanguageLike] | None,
    grouping: Grouping,
    *,
    distance_kind: str = "syntactic",
    bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
) -> pl.DataFrame:
    """The group of each language code under ``grouping`` (columns ``lang``, ``group``).

    ``lang`` is the code itself, ``all`` one group; ``resource`` the resource group
    (high/mid/low), ``family``, ``script``, and ``distance`` a bin of the ``distance_kind``
    distance to English cut at ``bin_edges`` (``d<0.33``, ``0.33<=d<0.67``, ``d>=0.67``). A code
    missing from ``languages`` is ``unknown``; a known language without that value (no resource
    class, no distance) is ``n/a``.

    >>> language_groups(["en", "zz"], {}, "resource").rows()
    [('en', 'unknown'), ('zz', 'unknown')]
    """
    codes = list(dict.fromkeys(codes))
    if grouping == "lang":
        groups: list[str] = list(codes)
    elif grouping == ALL:
        groups = [ALL] * len(codes)
    elif grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r} must be lang, all or one of {GROUPINGS}")
    elif grouping == "distance" and distance_kind not in DISTANCE_KINDS:
        raise ValueError(f"distance kind {distance_kind!r} must be one of {DISTANCE_KINDS}")
    else:
        known = languages or {}
        groups = [_group_of(known.get(c), grouping, distance_kind, bin_edges) for c in codes]
    return pl.DataFrame(
        {"lang": codes, "group": groups}, schema={"lang": pl.String, "group": pl.String}
    )


def _group_of(
    lang: LanguageLike | None, grouping: str, distance_kind: str, edges: Sequence[float]
) -> str:
    if lang is None:
        return UNKNOWN
    if grouping == "resource":
        return lang.resource_group or MISSING
    if grouping == "family":
        return lang.family or MISSING
    if grouping == "script":
        return lang.script or MISSING
    d = lang.distance(distance_kind)
    if d is None or math.isnan(d):
        return MISSING
    cuts = [f"{e:.2f}" for e in edges]
    for i, edge in enumerate(edges):
        if d < edge:
            return f"d<{cuts[0]}" if i == 0 else f"{cuts[i - 1]}<=d<{cuts[i]}"
    return f"d>={cuts[-1]}"


def unknown_languages(long: pl.DataFrame, languages: Mapping[str, LanguageLike]) -> list[str]:
    """Test languages of the runs that ``languages`` does not describe (sorted)."""
    codes = long.filter(pl.col("split") == "test")["lang"].unique().to_list()
    return sorted(c for c in codes if c not in languages)


def _paired_stats(
    frame: pl.DataFrame, keys: Sequence[str], *, n_resamples: int, seed: int
) -> pl.DataFrame:
    """Paired statistics of ``a - b`` per ``keys`` (frame columns: keys, lang, seed, a, b).

    Output per key: n_langs, n_seeds, a, b (means), diff, ci_low, ci_high, p_value, unit
    ("seeds", "languages" or "none"), n_units. See :data:`METHODS` for what is resampled.
    """
    keys = list(keys)
    frame = frame.with_columns(d=pl.col("a") - pl.col("b")).filter(pl.col("d").is_not_null())
    summary = frame.group_by(keys).agg(
        n_langs=pl.col("lang").n_unique(),
        n_seeds=pl.col("seed").n_unique(),
        a=pl.col("a").mean(),
        b=pl.col("b").mean(),
    )
    several = summary.filter(pl.col("n_seeds") >= 2).select(keys)
    single = summary.filter(pl.col("n_seeds") < 2).select(keys)
    units = pl.concat(
        [
            frame.join(several, on=keys, nulls_equal=True)
            .group_by(*keys, "seed")
            .agg(x=pl.col("d").mean())
            .drop("seed")
            .with_columns(unit=pl.lit("seeds")),
            frame.join(single, on=keys, nulls_equal=True)
            .group_by(*keys, "lang")
            .agg(x=pl.col("d").mean())
            .drop("lang")
            .with_columns(unit=pl.lit("languages")),
        ]
    )
    tested = _unit_stats(units, [*keys, "unit"], n_resamples=n_resamples, seed=seed).with_columns(
        unit=pl.when(pl.col("n_units") >= 2).then(pl.col("unit")).otherwise(pl.lit("none"))
    )
    return summary.join(tested, on=keys, how="left", nulls_equal=True).sort(keys)


def _unit_stats(
    units: pl.DataFrame, keys: Sequence[str], *, n_resamples: int, seed: int
) -> pl.DataFrame:
    """Mean, bootstrap interval and one-sample t-test of ``x`` per group of ``keys``.

    Groups are bucketed by their number of units so that each bucket is one vectorised call of
    ``scipy.stats.bootstrap`` / ``ttest_1samp`` on a (groups, n) array: no loop over groups.
    """
    units = units.sort(keys, nulls_last=True)
    sizes = units.group_by(keys, maintain_order=True).agg(n_units=pl.len())
    x = units["x"].to_numpy().astype(np.float64)
    n = sizes["n_units"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    mean = np.add.reduceat(x, starts) / n if len(n) else np.empty(0)
    low, high, p = (np.full(len(n), np.nan) for _ in range(3))
    rng = np.random.default_rng(seed)
    for size in np.unique(n[n >= 2]):
        rows = np.flatnonzero(n == size)
        sample = x[starts[rows, None] + np.arange(size)]  # (groups, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.bootstrap(
                (sample,),
                np.mean,
                axis=-1,
                vectorized=True,
                n_resamples=n_resamples,
                batch=_BOOT_BATCH,
                method="percentile",
                confidence_level=CONFIDENCE,
                rng=rng,
            ).confidence_interval
            low[rows], high[rows] = ci.low, ci.high
            scale = _TIE * np.maximum(1.0, np.abs(sample).max(-1))
            spread = np.ptp(sample, axis=-1) > scale
            if spread.any():
                p[rows[spread]] = stats.ttest_1samp(sample[spread], 0.0, axis=-1).pvalue
            # the same difference in every unit: t is infinite (p = 0) unless it is zero (p = 1)
            flat = rows[~spread]
            p[flat] = np.where(np.abs(mean[flat]) > scale[~spread], 0.0, 1.0)
    return sizes.with_columns(
        diff=pl.Series(mean, dtype=pl.Float64),
        ci_low=pl.Series(low, dtype=pl.Float64).fill_nan(None),
        ci_high=pl.Series(high, dtype=pl.Float64).fill_nan(None),
        p_value=pl.Series(p, dtype=pl.Float64).fill_nan(None),
    )


def gains(
    long: pl.DataFrame,
    *,
    grouping: Grouping = "lang",
    languages: Mapping[str, LanguageLike] | None = None,
    distance_kind: str = "syntactic",
    bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pl.DataFrame:
    """Test gain over the baseline of every chain, per language or language group.

    Each chain is its configuration with the best English dev score; the baseline is the best
    empty-chain configuration. A gain pairs chain and baseline runs of the same seed value on
    the same language. ``grouping``: ``lang`` (one row per language, English included), ``all``
    (every language, English included, like :attr:`TargetResult.gain_avg`), or one of
    :data:`GROUPINGS` over the transfer languages (English excluded).

    Columns: target, chain, label (intermediate phases joined by ``>``), dev_en (the chain's
    English dev score, mean over seeds: what selects it), grouping, group, n_langs, n_seeds,
    score, baseline, gain, ci_low, ci_high, p_value, unit, n_units. See :data:`METHODS` for
    what the interval resamples and what the test pairs.
    """
    return _gains(
        _evaluated(long),
        grouping=grouping,
        languages=languages,
        distance_kind=distance_kind,
        bin_edges=bin_edges,
        n_resamples=n_resamples,
        seed=seed,
    )


def _gains(
    scores: pl.LazyFrame,
    *,
    grouping: Grouping = "lang",
    languages: Mapping[str, LanguageLike] | None = None,
    distance_kind: str = "syntactic",
    bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pl.DataFrame:
    chains, baseline = _chain_scores(scores)
    diffs = chains.join(baseline, on=["target", "lang", "seed"]).collect()
    if grouping in GROUPINGS:
        diffs = diffs.filter(pl.col("lang") != SOURCE_LANG)
    groups = language_groups(
        diffs["lang"].unique().sort().to_list(),
        languages,
        grouping,
        distance_kind=distance_kind,
        bin_edges=bin_edges,
    )
    keys = ["target", "chain", "label", "dev_en", "group"]
    out = _paired_stats(
        diffs.join(groups, on="lang").rename({"value": "a", "baseline": "b"}),
        keys,
        n_resamples=n_resamples,
        seed=seed,
    )
    return out.select(
        "target",
        "chain",
        "label",
        "dev_en",
        pl.lit(grouping).alias("grouping"),
        "group",
        "n_langs",
        "n_seeds",
        score="a",
        baseline="b",
        gain="diff",
        ci_low="ci_low",
        ci_high="ci_high",
        p_value="p_value",
        unit="unit",
        n_units="n_units",
    )


def distance_correlations(
    per_language: pl.DataFrame,
    languages: Mapping[str, LanguageLike],
    *,
    kinds: Sequence[str] = DISTANCE_KINDS,
) -> pl.DataFrame:
    """Correlation of each chain's per-language gain with each typological distance to English.

    ``per_language`` is :func:`gains` with ``grouping="lang"``. English is left out (it is the
    source, not a transfer language), so are languages without that distance. Pearson's r and
    Spearman's rho with their two-sided p-values (``scipy.stats.pearsonr`` / ``spearmanr``);
    fewer than 3 languages or a constant column give nulls.

    Columns: target, chain, label, kind, n_langs, pearson_r, pearson_p, spearman_rho, spearman_p.
    """
    codes = per_language["group"].unique().to_list()
    dist = pl.DataFrame(
        [
            (code, kind, languages[code].distance(kind))
            for code in codes
            if code in languages
            for kind in kinds
        ],
        schema={"group": pl.String, "kind": pl.String, "distance": pl.Float64},
        orient="row",
    )
    keys = ["target", "chain", "label", "kind"]
    pairs = (
        per_language.filter(pl.col("group") != SOURCE_LANG, pl.col("gain").is_not_null())
        .join(dist.filter(pl.col("distance").is_not_null()), on="group")
        .sort([*keys, "group"])
    )
    rows = []
    # one scipy call per (chain, kind): a few hundred groups, each with one value per language
    for key, part in pairs.group_by(keys, maintain_order=True):
        x, y = part["distance"].to_numpy(), part["gain"].to_numpy()
        r = rp = rho = sp = None
        if len(x) >= 3 and _varies(x) and _varies(y):
            with warnings.catch_warnings():  # near-constant input is reported, not raised
                warnings.simplefilter("ignore")
                pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
            r, rp = float(pearson.statistic), float(pearson.pvalue)
            rho, sp = float(spearman.statistic), float(spearman.pvalue)
        rows.append((*key, len(x), r, rp, rho, sp))
    return pl.DataFrame(
        rows,
        schema={
            "target": pl.String,
            "chain": pl.String,
            "label": pl.String,
            "kind": pl.String,
            "n_langs": pl.Int64,
            "pearson_r": pl.Float64,
            "pearson_p": pl.Float64,
            "spearman_rho": pl.Float64,
            "spearman_p": pl.Float64,
        },
        orient="row",
    )


def _varies(values: np.ndarray) -> bool:
    """More spread than float noise (a gain equal everywhere is constant, not correlated)."""
    return bool(np.ptp(values) > _TIE * max(1.0, float(np.abs(values).max())))


def _compare_chains(
    pairs: pl.LazyFrame, chains: pl.LazyFrame, keys: Sequence[str], *, n_resamples: int, seed: int
) -> pl.DataFrame:
    """Paired a-vs-b statistics for chain pairs (``pairs``: target, chain, chain_b, ...), per
    language and over all languages (``group`` = lang code or ``all``)."""
    scores = chains.select("target", "chain", "lang", "seed", "value")
    frame = (
        pairs.join(scores, on=["target", "chain"])
        .join(
            scores.rename({"chain": "chain_b", "value": "b"}),
            on=["target", "chain_b", "lang", "seed"],
        )
        .rename({"value": "a"})
        .collect()
    )
    per_lang = frame.with_columns(group=pl.col("lang"))
    overall = frame.with_columns(group=pl.lit(ALL))
    return pl.concat(
        [
            _paired_stats(part, [*keys, "group"], n_resamples=n_resamples, seed=seed)
            for part in (overall, per_lang)
        ]
    )


def ordering_effects(
    long: pl.DataFrame, *, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> pl.DataFrame:
    """Chains with the same intermediate tasks in different orders, or mixed, compared pairwise.

    Chains of a target are grouped by the multiset of their intermediate tasks (a mixture phase
    ``mini_mnli+mini_qqp`` counts each task once); every pair of distinct chains in a group is
    compared seed by seed: ``diff = chain - chain_b`` (chain names in order), per language and
    over all languages (``group`` = ``all``). ``kind``: ``order`` (both sequential),
    ``mixture`` (both contain a mixture), ``mixture vs order``. ``seed_sd`` is the typical
    seed-to-seed standard deviation of the two chains' all-language scores (root mean of their
    variances; null with one seed); ``exceeds_noise`` is ``p_value < ALPHA`` where seeds were
    paired (null otherwise).

    Columns: target, tasks, chain, chain_b, kind, group, n_langs, n_seeds, score, score_b,
    diff, ci_low, ci_high, p_value, unit, n_units, seed_sd, exceeds_noise.
    """
    return _ordering_effects(_evaluated(long), n_resamples=n_resamples, seed=seed)


def _ordering_effects(scores: pl.LazyFrame, *, n_resamples: int, seed: int) -> pl.DataFrame:
    chains, _ = _chain_scores(scores)
    members = (
        chains.select("target", "chain", "label")
        .unique()
        .with_columns(
            tasks=pl.col("label")
            .str.replace_all(PHASE_SEP, MIX)
            .str.split(MIX)
            .list.sort()
            .list.join(", "),
            mixed=pl.col("label").str.contains(MIX, literal=True),
        )
    )
    pairs = (
        members.join(members, on=["target", "tasks"], suffix="_b")
        .filter(pl.col("chain") < pl.col("chain_b"))
        .with_columns(
            kind=pl.when(pl.col("mixed") & pl.col("mixed_b"))
            .then(pl.lit("mixture"))
            .when(pl.col("mixed") | pl.col("mixed_b"))
            .then(pl.lit("mixture vs order"))
            .otherwise(pl.lit("order"))
        )
        .select("target", "tasks", "chain", "chain_b", "kind")
    )
    keys = ["target", "tasks", "chain", "chain_b", "kind"]
    out = _compare_chains(pairs, chains, keys, n_resamples=n_resamples, seed=seed)
    variance = (
        chains.group_by("target", "chain", "seed")
        .agg(pl.col("value").mean())
        .group_by("target", "chain")
        .agg(var=pl.col("value").var())
        .collect()
    )
    return (
        out.join(variance, on=["target", "chain"], how="left")
        .join(
            variance.rename({"chain": "chain_b", "var": "var_b"}),
            on=["target", "chain_b"],
            how="left",
        )
        .with_columns(
            seed_sd=((pl.col("var") + pl.col("var_b")) / 2).sqrt(),
            exceeds_noise=pl.when(pl.col("unit") == "seeds")
            .then(pl.col("p_value").fill_null(1.0) < ALPHA)
            .otherwise(None),
        )
        .select(
            *keys,
            "group",
            "n_langs",
            "n_seeds",
            score="a",
            score_b="b",
            diff="diff",
            ci_low="ci_low",
            ci_high="ci_high",
            p_value="p_value",
            unit="unit",
            n_units="n_units",
            seed_sd="seed_sd",
            exceeds_noise="exceeds_noise",
        )
        .sort("target", "tasks", "chain", "chain_b", pl.col("group") != ALL, "group")
    )


def translation_effects(
    long: pl.DataFrame,
    translations: Mapping[str, str],
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pl.DataFrame:
    """Machine-translated intermediate data against its English original, where both were run.

    ``translations`` maps a translated task to the English task it translates (``TaskSpec
    .translation_of``). A chain with at least one translated task is paired with the chain that
    substitutes every translated task by its original (same order, same mixtures), if that chain
    was run for the same target; ``diff = translated - english``, seed by seed, per language and
    over all languages (``group`` = ``all``).

    Columns: target, chain (translated), english_chain, group, n_langs, n_seeds, score,
    score_english, diff, ci_low, ci_high, p_value, unit, n_units.
    """
    return _translation_effects(_evaluated(long), translations, n_resamples=n_resamples, seed=seed)


def _translation_effects(
    scores: pl.LazyFrame, translations: Mapping[str, str], *, n_resamples: int, seed: int
) -> pl.DataFrame:
    chains, _ = _chain_scores(scores)
    mapping = dict(translations)
    members = chains.select("target", "chain", "label", "intermediate").unique()
    english_label = pl.col("intermediate").list.eval(
        pl.element().str.split(MIX).list.eval(pl.element().replace(mapping)).list.join(MIX)
    )
    translated = members.filter(
        pl.col("intermediate")
        .list.eval(
            pl.element().str.split(MIX).list.eval(pl.element().is_in(list(mapping))).list.any()
        )
        .list.any()
    ).with_columns(label_b=english_label.list.join(PHASE_SEP))
    pairs = translated.join(
        members.select("target", chain_b="chain", label_b="label"), on=["target", "label_b"]
    ).select("target", "chain", "chain_b")
    keys = ["target", "chain", "chain_b"]
    out = _compare_chains(pairs, chains, keys, n_resamples=n_resamples, seed=seed)
    return out.select(
        "target",
        "chain",
        english_chain="chain_b",
        group="group",
        n_langs="n_langs",
        n_seeds="n_seeds",
        score="a",
        score_english="b",
        diff="diff",
        ci_low="ci_low",
        ci_high="ci_high",
        p_value="p_value",
        unit="unit",
        n_units="n_units",
    ).sort("target", "chain", pl.col("group") != ALL, "group")


def selection_comparison(long: pl.DataFrame) -> pl.DataFrame:
    """Strict zero-shot selection (English dev) beside target-language dev selection.

    Per target and test language: ``en_*`` is the configuration with the best English dev score
    (the same for every language, as in :func:`best_chains`); ``lang_*`` the configuration with
    the best dev score *in that language* (an oracle that needs target-language labels). Each
    gain is over the baseline configuration selected by the same rule, paired by seed as in
    :func:`best_chains`: test scores and gain are means over the seeds the two configurations
    share (each its own mean over seeds, and no gain, where they share none). Scores are of the
    primary metric; ties as in :func:`best_chains`.

    Columns: target, lang, en_chain, en_test, en_gain, lang_chain, lang_dev, lang_test,
    lang_gain.
    """
    return _selection_comparison(_evaluated(long))


def _selection_comparison(scores: pl.LazyFrame) -> pl.DataFrame:
    per_lang = (
        scores.group_by("target", "config_key", "lang")
        .agg(
            pl.col("chain", "intermediate").first(),
            dev=pl.col("value").filter(pl.col("split") == "dev").mean(),
        )
        .with_columns(phases=pl.col("intermediate").list.len())
    )
    configs = _configs(scores)
    tests = scores.filter(pl.col("split") == "test").select(
        "target", "config_key", "lang", "seed", "value"
    )

    def runs(picked: pl.LazyFrame, on: list[str], column: str) -> pl.LazyFrame:
        """Per-seed test scores of the configurations ``picked`` per ``on``."""
        return tests.join(picked.select(*on, "config_key"), on=[*on, "config_key"]).select(
            "target", "lang", "seed", pl.col("value").alias(column)
        )

    en_best = _pick(configs, ["target"], "dev_en")
    en_base = _pick(configs.filter(pl.col("phases") == 0), ["target"], "dev_en")
    lang_best = _pick(per_lang, ["target", "lang"], "dev")
    lang_base = _pick(per_lang.filter(pl.col("phases") == 0), ["target", "lang"], "dev")
    by = ["target", "lang"]
    en = (
        _paired_means(runs(en_best, ["target"], "a"), runs(en_base, ["target"], "b"), by)
        .select(*by, en_test="a", en_gain="gain")
        .filter(pl.col("en_test").is_not_null())
    )
    lang = _paired_means(runs(lang_best, by, "a"), runs(lang_base, by, "b"), by).select(
        *by, lang_test="a", lang_gain="gain"
    )
    return (
        en.join(en_best.select("target", en_chain="chain"), on="target", how="left")
        .join(
            lang_best.select(*by, lang_chain="chain", lang_dev="dev").join(lang, on=by, how="left"),
            on=by,
            how="full",
            coalesce=True,
        )
        .filter(pl.col("en_test").is_not_null() | pl.col("lang_test").is_not_null())
        .select(
            "target",
            "lang",
            "en_chain",
            "en_test",
            "en_gain",
            "lang_chain",
            "lang_dev",
            "lang_test",
            "lang_gain",
        )
        .sort("target", pl.col("lang") != SOURCE_LANG, "lang")
        .collect()
    )


def benchmark_scores(long: pl.DataFrame, tasks: Mapping[str, TaskLike]) -> pl.DataFrame:
    """Benchmark aggregates computed the way XTREME and XTREME-R compute them.

    A *task score* averages, over the target's test languages (English included), each of the
    task's ``benchmark_metrics`` and then averages those metrics: a QA task scores
    ``(mean EM + mean F1) / 2`` as in XTREME's ``evaluate.py``. A *category score* is the mean
    of its tasks' scores (``TaskSpec.category``; none is ``uncategorized``). ``overall_xtreme``
    is the mean over tasks (XTREME's ``evaluate.py``: the sum of task scores over the number of
    tasks) and ``overall_xtreme_r`` the mean over categories. Checked on 2026-11: XTREME's
    ``evaluate.py`` (google-research/xtreme) computes ``avg_metric`` per task (QA:
    ``(avg_exact_match + avg_f1) / 2``), category scores as the mean of their tasks and
    ``all_task`` as the mean of the nine task scores. No XTREME-R scoring code was found; the
    category mean is our reading of the XTREME-R leaderboard, which reports the four category
    scores: treat ``overall_xtreme_r`` as that reading. Scores are means over seeds.

    Systems: ``baseline`` (each target's selected empty chain), ``best chain per target``
    (each target's English-dev-selected chain, as the paper's combined XTREME row), and every
    intermediate label (e.g. ``mini_mnli``) with the targets it was run for. ``n_tasks`` says
    how many targets a row covers. A category or overall score needs a score for every task of
    the experiment it averages (every catalog target with a finished run, of that category):
    otherwise it is null, since a mean over a subset of the tasks is not comparable with the
    other systems' rows. ``gain`` is ``score - baseline`` (null where either is null).

    Columns: system, level (task, category, overall_xtreme, overall_xtreme_r), name, score,
    n_tasks, gain.
    """
    return _benchmark_scores(long, _evaluated(long), tasks)


def _task_benchmark_scores(long: pl.DataFrame, tasks: Mapping[str, TaskLike]) -> pl.LazyFrame:
    """(target, config_key, category, score): a configuration's benchmark score on its target,
    the mean over the task's benchmark metrics of the mean over languages of the seed means."""
    spec = pl.DataFrame(
        [
            (name, metric, task.category or "uncategorized")
            for name, task in tasks.items()
            for metric in task.benchmark_metrics
        ],
        schema={"task": pl.String, "metric": pl.String, "category": pl.String},
        orient="row",
    ).lazy()
    evaluated = (
        long.lazy()
        .filter(
            pl.col("status") == "FINISHED",
            pl.col("config_key").is_not_null(),
            pl.col("task") == pl.col("target"),
        )
        .filter(
            ((pl.col("split") == "test") & (pl.col("metric") == pl.col("primary_metric")))
            .any()
            .over("run_id")
        )
    )
    task_scores = (
        evaluated.filter(pl.col("split") == "test", pl.col("value").is_not_null())
        .join(spec, on=["task", "metric"])
        .group_by("target", "config_key", "category", "lang", "metric", "seed")
        .agg(pl.col("value").mean())
        .group_by("target", "config_key", "category", "lang", "metric")
        .agg(pl.col("value").mean())  # over seeds
        .group_by("target", "config_key", "category", "metric")
        .agg(pl.col("value").mean())  # over languages
        .group_by("target", "config_key", "category")
        .agg(score=pl.col("value").mean())  # over the task's benchmark metrics
    )
    return task_scores


def _benchmark_systems(scores: pl.LazyFrame) -> pl.LazyFrame:
    """(target, config_key, system): the baseline, the best chain, and the best chain of each
    intermediate label, per target, all selected on English dev."""
    configs = _configs(scores)
    return pl.concat(
        [
            _pick(configs.filter(pl.col("phases") == 0), ["target"], "dev_en").select(
                "target", "config_key", system=pl.lit(BASELINE_SYSTEM)
            ),
            _pick(configs, ["target"], "dev_en").select(
                "target", "config_key", system=pl.lit(BEST_SYSTEM)
            ),
            _pick(configs.filter(pl.col("phases") > 0), ["target", "label"], "dev_en").select(
                "target", "config_key", system="label"
            ),
        ]
    )


def _benchmark_levels(per_task: pl.DataFrame) -> pl.DataFrame:
    """Per system: task, category and overall (XTREME: over tasks; XTREME-R: over categories)
    scores; an average over a subset of the experiment's tasks is left out (None)."""
    categories = per_task.group_by("system", "category").agg(
        score=pl.col("score").mean(), n_tasks=pl.len()
    )
    rows = pl.concat(
        [
            per_task.select(
                "system", level=pl.lit("task"), name="target", score="score", n_tasks=pl.lit(1)
            ),
            categories.select(
                "system",
                level=pl.lit("category"),
                name="category",
                score="score",
                n_tasks="n_tasks",
            ),
            per_task.group_by("system").agg(
                level=pl.lit("overall_xtreme"),
                name=pl.lit("all tasks"),
                score=pl.col("score").mean(),
                n_tasks=pl.len(),
            ),
            categories.group_by("system").agg(
                level=pl.lit("overall_xtreme_r"),
                name=pl.lit("all categories"),
                score=pl.col("score").mean(),
                n_tasks=pl.col("n_tasks").sum(),
            ),
        ],
        how="vertical_relaxed",
    )
    # an overall or category score over a subset of its tasks is not comparable with one over
    # all of them: it needs a score for every task of the experiment it averages
    present = per_task.select("target", "category").unique()
    expected = pl.concat(
        [
            present.group_by(name="category").agg(level=pl.lit("category"), expected=pl.len()),
            pl.DataFrame(
                {
                    "name": ["all tasks", "all categories"],
                    "level": ["overall_xtreme", "overall_xtreme_r"],
                    "expected": [present.height] * 2,
                },
                schema={"name": pl.String, "level": pl.String, "expected": pl.UInt32},
            ),
        ]
    )
    rows = (
        rows.join(expected, on=["level", "name"], how="left")
        .with_columns(
            score=pl.when(
                (pl.col("level") == "task") | (pl.col("n_tasks") == pl.col("expected"))
            ).then(pl.col("score"))
        )
        .drop("expected")
    )
    return rows


def _benchmark_scores(
    long: pl.DataFrame, scores: pl.LazyFrame, tasks: Mapping[str, TaskLike]
) -> pl.DataFrame:
    task_scores = _task_benchmark_scores(long, tasks)
    per_task = _benchmark_systems(scores).join(task_scores, on=["target", "config_key"]).collect()
    rows = _benchmark_levels(per_task)
    base = rows.filter(pl.col("system") == BASELINE_SYSTEM).select(
        "level", "name", base_score="score"
    )
    level_order = pl.col("level").replace_strict(
        {"overall_xtreme": 0, "overall_xtreme_r": 1, "category": 2, "task": 3}
    )
    system_order = pl.col("system").replace_strict(
        {BASELINE_SYSTEM: 0, BEST_SYSTEM: 1}, default=2, return_dtype=pl.Int64
    )
    return (
        rows.join(base, on=["level", "name"], how="left")
        .with_columns(
            gain=pl.col("score") - pl.col("base_score"), n_tasks=pl.col("n_tasks").cast(pl.Int64)
        )
        .sort(system_order, "system", level_order, "name")
        .select("system", "level", "name", "score", "n_tasks", "gain")
    )


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """Every issue-5 analysis of one experiment (DataFrames; :meth:`tables` for plain rows)."""

    best: list[TargetResult]
    selection: pl.DataFrame  # :func:`selection_comparison`
    gains: pl.DataFrame  # :func:`gains` for "lang", "all" and each grouping, stacked
    correlations: pl.DataFrame  # :func:`distance_correlations`
    ordering: pl.DataFrame  # :func:`ordering_effects`
    translation: pl.DataFrame  # :func:`translation_effects`
    benchmark: pl.DataFrame  # :func:`benchmark_scores`
    unknown_languages: list[str]  # test languages the language table does not know
    # distance to English of each known test language, by kind (None: not in the table)
    distances: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Each DataFrame as a list of row dicts (NaN as None): what the report consumes."""
        frames = {
            "selection": self.selection,
            "gains": self.gains,
            "correlations": self.correlations,
            "ordering": self.ordering,
            "translation": self.translation,
            "benchmark": self.benchmark,
        }
        return {name: _rows(frame) for name, frame in frames.items()}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "methods": METHODS,
            "best_chains": [_json_safe(asdict(r)) for r in self.best],
            **self.tables(),
            "unknown_languages": self.unknown_languages,
            "distances": self.distances,
            "notes": self.notes,
        }
        return out


def analyze(
    long: pl.DataFrame,
    *,
    tasks: Mapping[str, TaskLike] | None = None,
    languages: Mapping[str, LanguageLike] | None = None,
    translations: Mapping[str, str] | None = None,
    groupings: Sequence[str] = GROUPINGS,
    distance_kind: str = "syntactic",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Analysis:
    """Run every analysis on the long table of :func:`runs_to_long`.

    Without ``languages`` the groupings and distance correlations are skipped (noted in
    ``notes``); without ``tasks`` so is the benchmark aggregate. Bootstrap draws come from
    ``numpy.random.default_rng(seed)``: the same runs give the same intervals.
    """
    notes: list[str] = []
    kw: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}
    # every analysis reads the target's scores of FINISHED runs: filter (and evaluate) once
    own = long.filter(pl.col("status") == "FINISHED", pl.col("task") == pl.col("target"))
    scores = _evaluated(own).collect().lazy()
    per_lang = _gains(scores, grouping="lang", **kw)
    frames = [per_lang, _gains(scores, grouping=ALL, **kw)]
    if languages is None:
        notes.append("no language table: groups and distance correlations skipped")
        correlations = distance_correlations(per_lang.clear(), {})
        unknown: list[str] = []
        distances: dict[str, dict[str, float | None]] = {}
    else:
        frames += [
            _gains(
                scores,
                grouping=cast("Grouping", grouping),
                languages=languages,
                distance_kind=distance_kind,
                **kw,
            )
            for grouping in groupings
        ]
        correlations = distance_correlations(per_lang, languages)
        unknown, distances = _language_distances(long, languages)
        if unknown:
            notes.append(
                f"languages without typology/resource data (group 'unknown', left out of "
                f"correlations): {', '.join(unknown)}"
            )
    if tasks is None:
        notes.append("no task catalog: benchmark aggregate skipped")
    single = _single_seed_targets(scores)
    if single:
        notes.append(
            f"one seed for {', '.join(single)}: no seed intervals or paired tests per language "
            "there; group rows resample languages instead (unit = languages)"
        )
    best = best_chains(own)
    notes += [f"{_unpaired(r)}: no gain" for r in best if r.baseline and not r.gains]
    return Analysis(
        best=best,
        selection=_selection_comparison(scores),
        gains=pl.concat(frames),
        correlations=correlations,
        ordering=_ordering_effects(scores, **kw),
        translation=_translation_effects(scores, translations or {}, **kw),
        benchmark=(
            _benchmark_scores(own, scores, tasks) if tasks is not None else _EMPTY_BENCHMARK.clear()
        ),
        unknown_languages=unknown,
        distances=distances,
        notes=notes,
    )


def _language_distances(
    long: pl.DataFrame, languages: Mapping[str, LanguageLike]
) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """The run languages the table does not know, and each known one's distances to English."""
    unknown = unknown_languages(long, languages)
    distances = {
        code: {kind: languages[code].distance(kind) for kind in DISTANCE_KINDS}
        for code in sorted(set(long["lang"].unique().to_list()) - set(unknown))
        if code in languages
    }
    return unknown, distances


def _single_seed_targets(scores: pl.LazyFrame) -> list[str]:
    """Targets whose test scores (FINISHED runs with a seed) come from a single seed value."""
    return (
        scores.filter(pl.col("split") == "test")
        .group_by("target")
        .agg(pl.col("seed").n_unique())
        .filter(pl.col("seed") == 1)
        .sort("target")
        .collect()["target"]
        .to_list()
    )


_BENCHMARK_PARTIAL = (
    "-: not every task of that column has a score for the system; a mean over some of its "
    "tasks would not compare with the other rows"
)

_EMPTY_BENCHMARK = pl.DataFrame(
    schema={
        "system": pl.String,
        "level": pl.String,
        "name": pl.String,
        "score": pl.Float64,
        "n_tasks": pl.Int64,
        "gain": pl.Float64,
    }
)


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = frame.to_dicts()
    return [{k: _json_safe(v) for k, v in row.items()} for row in rows]


Select = Literal["en", "target", "both"]


def render_analysis(
    analysis: Analysis,
    fmt: Literal["table", "json", "csv"],
    *,
    by: str = "none",
    select: Select = "en",
) -> str:
    """Format an :class:`Analysis`: ``table`` for people (x100), ``json``/``csv`` raw fractions.

    ``json`` holds everything (best chains, every table, methods, notes). ``csv`` is the gain
    table of grouping ``by`` (``none``: all languages together). ``table`` shows the best chains
    (``select`` en/both) or the target-language dev selection (target/both), gains grouped
    ``by``, distance correlations, ordering and translation effects, the benchmark aggregate.
    """
    grouping = ALL if by == "none" else by
    if grouping not in (ALL, "lang", *GROUPINGS):
        raise ValueError(f"by {by!r} must be none, lang or one of {GROUPINGS}")
    if fmt == "json":
        return json.dumps(analysis.to_json(), indent=2)
    if fmt == "csv":
        return analysis.gains.filter(pl.col("grouping") == grouping).write_csv()
    if fmt != "table":
        raise ValueError(f"format {fmt!r} must be one of table, json, csv")
    sections = []
    if select in ("en", "both"):
        sections.append(render(analysis.best, "table"))
    if select in ("target", "both"):
        sections.append(_selection_table(analysis.selection, both=select == "both"))
    sections += [
        _gains_table(analysis.gains.filter(pl.col("grouping") == grouping), grouping),
        _correlation_table(analysis.correlations, analysis.best),
        _ordering_table(analysis.ordering),
        _translation_table(analysis.translation),
        _benchmark_table(analysis.benchmark),
    ]
    notes = [f"note: {n}" for n in analysis.notes]
    return "\n\n".join([s for s in sections if s] + (["\n".join(notes)] if notes else []))


def _text_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column(s) of text, right-aligned numbers; two spaces between."""
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + "  ".join(
                c.rjust(w) if num else c.ljust(w)
                for c, w, num in zip(cells, widths, numeric, strict=True)
            ).rstrip()
        )

    return "\n".join([title, line(headers), *(line(r) for r in rows)])


def _is_number(text: str) -> bool:
    return text == "-" or text.lstrip("+-").replace(".", "", 1).replace("[", "").isdigit()


def _selection_table(frame: pl.DataFrame, *, both: bool) -> str:
    headers = ["target", "lang"]
    if both:
        headers += ["en-dev chain", "test", "gain"]
    headers += ["lang-dev chain", "test", "gain"]
    rows = []
    for r in frame.iter_rows(named=True):
        cells = [r["target"], r["lang"]]
        if both:
            cells += [r["en_chain"] or "-", _pct(r["en_test"]), _gain(r["en_gain"])]
        cells += [r["lang_chain"] or "-", _pct(r["lang_test"]), _gain(r["lang_gain"])]
        rows.append(cells)
    title = (
        "Selection on English dev (strict zero-shot) vs on each language's dev (oracle), test x100"
    )
    return _text_table(
        title if both else "Selection on each language's dev, test x100", headers, rows
    )


def _gains_table(frame: pl.DataFrame, grouping: str) -> str:
    rows = [
        [
            r["target"],
            r["label"],
            r["group"],
            str(r["n_langs"]),
            str(r["n_seeds"]),
            _gain(r["gain"]),
            _ci(r["ci_low"], r["ci_high"]),
            _p(r["p_value"]),
            r["unit"],
        ]
        for r in frame.sort(
            "target",
            *(["group", pl.col("gain").mul(-1)] if grouping == ALL else ["label"]),
            "group",
        ).iter_rows(named=True)
    ]
    what = "all languages" if grouping == ALL else f"by {grouping}"
    return _text_table(
        f"Gain over the baseline ({what}), x100: mean, {CONFIDENCE:.0%} bootstrap CI and paired "
        "t-test over the resampled unit",
        ["target", "intermediate", "group", "langs", "seeds", "gain", "CI", "p", "unit"],
        rows,
    )


def _correlation_table(frame: pl.DataFrame, best: Sequence[TargetResult]) -> str:
    chosen = {(r.target, r.chain_name) for r in best}
    rows = [
        [
            r["target"],
            r["label"],
            r["kind"],
            str(r["n_langs"]),
            _num(r["pearson_r"]),
            _p(r["pearson_p"]),
            _num(r["spearman_rho"]),
            _p(r["spearman_p"]),
        ]
        for r in frame.sort("target", "label", "kind").iter_rows(named=True)
        if (r["target"], r["chain"]) in chosen
    ]
    return _text_table(
        "Gain vs typological distance to English (best chain per target; transfer languages)",
        ["target", "intermediate", "distance", "langs", "pearson", "p", "spearman", "p"],
        rows,
    )


def _ordering_table(frame: pl.DataFrame) -> str:
    rows = [
        [
            r["target"],
            f"{r['chain']} - {r['chain_b']}",
            r["kind"],
            str(r["n_seeds"]),
            _gain(r["diff"]),
            _ci(r["ci_low"], r["ci_high"]),
            _p(r["p_value"]),
            _pct(r["seed_sd"]),
            "-" if r["exceeds_noise"] is None else ("yes" if r["exceeds_noise"] else "no"),
        ]
        for r in frame.filter(pl.col("group") == ALL).iter_rows(named=True)
    ]
    return _text_table(
        "Ordering effects: same intermediate tasks, different order or mixed (all languages, x100)",
        ["target", "chain - chain_b", "kind", "seeds", "diff", "CI", "p", "seed sd", "exceeds"],
        rows,
    )


def _translation_table(frame: pl.DataFrame) -> str:
    rows = [
        [
            r["target"],
            f"{r['chain']} - {r['english_chain']}",
            str(r["n_seeds"]),
            _gain(r["diff"]),
            _ci(r["ci_low"], r["ci_high"]),
            _p(r["p_value"]),
            r["unit"],
        ]
        for r in frame.filter(pl.col("group") == ALL).iter_rows(named=True)
    ]
    return _text_table(
        "Translated vs English intermediate data (all languages, x100)",
        ["target", "translated - english", "seeds", "diff", "CI", "p", "unit"],
        rows,
    )


def _benchmark_table(frame: pl.DataFrame) -> str:
    """One row per system: overall scores, then categories, then tasks (score and gain)."""
    if frame.is_empty():
        return ""
    columns = [
        ("overall_xtreme", "all tasks", "XTREME"),
        ("overall_xtreme_r", "all categories", "XTREME-R"),
        *(
            ("category", name, name)
            for name in frame.filter(pl.col("level") == "category")["name"].unique().sort()
        ),
        *(("task", name, name) for name in frame.filter(level="task")["name"].unique().sort()),
    ]
    cells = {
        (r["system"], r["level"], r["name"]): f"{_pct(r['score'])} ({_gain(r['gain'])})"
        for r in frame.iter_rows(named=True)
        if r["score"] is not None
    }
    systems = frame["system"].unique(maintain_order=True).to_list()
    rows = [
        [system, *(cells.get((system, level, name), "-") for level, name, _ in columns)]
        for system in systems
    ]
    table = _text_table(
        "Benchmark aggregate the XTREME way, x100 (gain over baseline): task = mean over its "
        "languages (QA: mean of EM and F1); XTREME = mean over tasks, XTREME-R = mean over "
        "categories",
        ["system", *(title for _, _, title in columns)],
        rows,
    )
    if frame.filter(pl.col("level") != "task", pl.col("score").is_null()).height:
        table += f"\n  {_BENCHMARK_PARTIAL}"
    return table
