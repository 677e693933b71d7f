"""Best-chain selection and rendering on hand-built runs with hand-computed expectations."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats

from raystilts.analysis.tables import (
    GROUPINGS,
    TargetResult,
    analyze,
    benchmark_scores,
    best_chains,
    distance_correlations,
    gains,
    ordering_effects,
    render,
    render_analysis,
    runs_to_long,
    selection_comparison,
    translation_effects,
    unknown_languages,
)


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _run(
    run_id: str,
    chain: str,
    seed: int,
    config_key: str,
    *,
    dev_en: float,
    test: dict[str, float] | None = None,
    metric: str = "accuracy",
) -> Run:
    """A trial of ``chain``; ``test=None`` is a run ASHA stopped after a dev evaluation."""
    *intermediate, target = chain.split(">")
    metrics = {
        f"dev/{target}/en/{metric}": dev_en,
        f"dev/{target}/en/loss": 9.0,  # not the primary metric
        f"dev/{target}/avg/{metric}": 0.0,  # the logged average is recomputed, not read
        "train/loss": 1.0,  # not the 4-part layout
    }
    for lang, value in (test or {}).items():
        metrics[f"test/{target}/{lang}/{metric}"] = value
    if intermediate:  # intermediate tasks' own scores must not leak into the target's
        metrics[f"dev/{intermediate[0]}/en/{metric}"] = 0.99
    return Run(
        run_id=run_id,
        status="FINISHED" if test else "KILLED",
        params={
            "target": target,
            "chain": chain,
            "intermediate": json.dumps(intermediate),
            "chain_length": str(len(intermediate)),
            "seed": str(seed),
            "model": "tiny",
            "metric": metric,
            "config_key": config_key,
        },
        tags={"raystilts.target": target, "raystilts.trial_id": run_id},
        metrics=metrics,
    )


XNLI = "mini_xnli"
UDPOS = "mini_udpos"
RUNS = [
    # mini_xnli baseline, selected (dev 0.71)
    _run("b0", XNLI, 0, "kb", dev_en=0.70, test={"en": 0.80, "de": 0.60, "sw": 0.40}),
    _run("b1", XNLI, 1, "kb", dev_en=0.72, test={"en": 0.82, "de": 0.62, "sw": 0.44}),
    # a worse baseline config (dev 0.65) with better test scores: never used
    _run("bb0", XNLI, 0, "kb2", dev_en=0.65, test={"en": 0.90, "de": 0.90, "sw": 0.90}),
    _run("bb1", XNLI, 1, "kb2", dev_en=0.65, test={"en": 0.90, "de": 0.90, "sw": 0.90}),
    # the best chain (dev 0.76)
    _run(
        "m0",
        f"mini_mnli>{XNLI}",
        0,
        "k1",
        dev_en=0.75,
        test={"en": 0.84, "de": 0.66, "sw": 0.45},
    ),
    _run(
        "m1",
        f"mini_mnli>{XNLI}",
        1,
        "k1",
        dev_en=0.77,
        test={"en": 0.86, "de": 0.68, "sw": 0.47},
    ),
    # seed 1 stopped early with a high dev score that must not count (else 0.865 would win)
    _run(
        "q0",
        f"mini_qqp>{XNLI}",
        0,
        "k2",
        dev_en=0.74,
        test={"en": 0.99, "de": 0.99, "sw": 0.99},
    ),
    _run("q1", f"mini_qqp>{XNLI}", 1, "k2", dev_en=0.99),
    # stopped early in both seeds: not a candidate
    _run("mq0", f"mini_mnli>mini_qqp>{XNLI}", 0, "k3", dev_en=0.95),
    _run("mq1", f"mini_mnli>mini_qqp>{XNLI}", 1, "k3", dev_en=0.96),
    # mini_udpos: no baseline; three chains tie on dev, fewest phases then name wins
    *(
        _run(f"u{key}{seed}", chain, seed, key, dev_en=0.5, test=test, metric="f1")
        for key, chain, test in [
            ("u1", f"mini_mnli>{UDPOS}", {"en": 0.9, "de": 0.7, "ja": 0.3}),
            ("u2", f"mini_qqp>{UDPOS}", {"en": 0.1, "de": 0.1, "ja": 0.1}),
            ("u3", f"mini_mnli>mini_qqp>{UDPOS}", {"en": 0.1, "de": 0.1, "ja": 0.1}),
        ]
        for seed in (0, 1)
    ),
]


@pytest.fixture(scope="module")
def results() -> list[TargetResult]:
    return best_chains(runs_to_long(RUNS))


def test_runs_to_long_keeps_layout_rows_only() -> None:
    long = runs_to_long(RUNS)
    assert long.columns == [
        "run_id",
        "status",
        "target",
        "chain",
        "intermediate",
        "seed",
        "config_key",
        "primary_metric",
        "split",
        "task",
        "lang",
        "metric",
        "value",
    ]
    assert "avg" not in long["lang"].to_list()
    b0 = long.filter(run_id="b0")
    assert b0.height == 5  # dev en accuracy + dev en loss + three test languages
    assert b0["intermediate"].to_list()[0] == []
    assert long.filter(run_id="mq0")["intermediate"].to_list()[0] == [
        "mini_mnli",
        "mini_qqp",
    ]
    assert long["seed"].dtype.is_integer()


def test_runs_to_long_of_nothing_has_the_schema() -> None:
    long = runs_to_long([])
    assert long.height == 0
    assert long.schema == runs_to_long(RUNS).schema


def test_best_chain_selected_on_english_dev(results: list[TargetResult]) -> None:
    assert [r.target for r in results] == [UDPOS, XNLI]
    xnli = results[1]
    assert xnli.chain == ["mini_mnli"]
    assert xnli.chain_name == f"mini_mnli>{XNLI}"
    assert xnli.config_key == "k1"
    assert xnli.metric == "accuracy"
    assert xnli.n_seeds == 2
    assert xnli.n_candidates == 4  # kb, kb2, k1, k2 (k3 never finished)
    assert xnli.dev_en == pytest.approx(0.76)
    assert xnli.languages == pytest.approx({"en": 0.85, "de": 0.67, "sw": 0.46})
    assert xnli.baseline_config_key == "kb"
    assert xnli.baseline == pytest.approx({"en": 0.81, "de": 0.61, "sw": 0.42})
    assert xnli.gains == pytest.approx({"en": 0.04, "de": 0.06, "sw": 0.04})
    assert xnli.avg == pytest.approx((0.85 + 0.67 + 0.46) / 3)
    assert xnli.baseline_avg == pytest.approx((0.81 + 0.61 + 0.42) / 3)
    assert xnli.gain_avg == pytest.approx(0.14 / 3)


def test_ties_prefer_fewer_phases_then_name_and_missing_baseline(
    results: list[TargetResult],
) -> None:
    udpos = results[0]
    assert udpos.chain_name == f"mini_mnli>{UDPOS}"
    assert udpos.metric == "f1"
    assert udpos.n_candidates == 3
    assert udpos.languages == pytest.approx({"en": 0.9, "de": 0.7, "ja": 0.3})
    assert udpos.baseline == {}
    assert udpos.gains == {}
    assert udpos.avg == pytest.approx(0.633333, abs=1e-6)
    assert math.isnan(udpos.baseline_avg)
    assert math.isnan(udpos.gain_avg)


def test_baseline_can_win() -> None:
    runs = [
        _run("b", XNLI, 0, "kb", dev_en=0.8, test={"en": 0.8, "de": 0.5}),
        _run("m", f"mini_mnli>{XNLI}", 0, "k1", dev_en=0.7, test={"en": 0.9, "de": 0.9}),
    ]
    [result] = best_chains(runs_to_long(runs))
    assert result.chain == []
    assert result.chain_name == XNLI
    assert result.gains == {"en": 0.0, "de": 0.0}


def test_no_finished_run_gives_no_result() -> None:
    assert best_chains(runs_to_long([_run("s", XNLI, 0, "k", dev_en=0.9)])) == []
    assert render([], "table").startswith("no target")
    assert json.loads(render([], "json")) == []


def test_render_json_round_trip(results: list[TargetResult]) -> None:
    loaded = json.loads(render(results, "json"))
    required = {
        "target",
        "chain",
        "chain_name",
        "metric",
        "dev_en",
        "languages",
        "baseline",
    }
    required |= {"gains", "gain_avg", "avg", "baseline_avg", "n_seeds"}
    assert all(required <= set(item) for item in loaded)
    udpos, xnli = loaded
    assert xnli["chain"] == ["mini_mnli"]
    assert xnli["gains"]["de"] == pytest.approx(0.06)
    assert udpos["gain_avg"] is None  # NaN is not JSON


def test_render_csv_one_row_per_target_language(results: list[TargetResult]) -> None:
    rows = list(csv.DictReader(io.StringIO(render(results, "csv"))))
    assert len(rows) == 6
    assert {"target", "chain_name", "lang", "test", "baseline", "gain"} <= set(rows[0])
    sw = next(r for r in rows if r["target"] == XNLI and r["lang"] == "sw")
    assert float(sw["test"]) == pytest.approx(0.46)
    assert float(sw["gain"]) == pytest.approx(0.04)
    assert next(r for r in rows if r["target"] == UDPOS)["baseline"] == ""


def test_render_table(results: list[TargetResult]) -> None:
    table = render(results, "table")
    assert f"{XNLI}  best chain: mini_mnli>{XNLI}  (en dev accuracy 76.0, 4 configs" in table
    assert f"no baseline run for {UDPOS}" in table
    lines = table.splitlines()
    assert any(line.split() == ["de", "67.0", "61.0", "+6.0"] for line in lines)
    assert any(line.split() == ["avg", "63.3", "-", "-"] for line in lines)
    assert max(len(line) for line in lines) <= 100


def test_end_to_end_through_mlflow(tmp_path: Path) -> None:
    from raystilts.tracking.store import Tracker, default_tracking_uri, load_runs

    tracker = Tracker(tracking_uri=default_tracking_uri(tmp_path), experiment="e2e")
    for run in RUNS[:6]:
        run_id = tracker.start_trial(
            trial_id=run.run_id, run_name=run.run_id, params=run.params, tags=run.tags
        )
        tracker.log_metrics(run_id, {k: 0.0 for k in run.metrics}, step=1)  # superseded
        tracker.log_metrics(run_id, run.metrics, step=2)
        tracker.end_trial(run_id, status="FINISHED")

    records = load_runs(tracking_uri=tracker.tracking_uri, experiment="e2e")
    [result] = best_chains(runs_to_long(records))
    assert result.chain_name == f"mini_mnli>{XNLI}"
    assert result.gains == pytest.approx({"en": 0.04, "de": 0.06, "sw": 0.04})


# ---------------------------------------------------------------------------------------------
# Issue 5: every analysis on a hand-computable experiment, from records and from a real store.
#
# Target X = mini_xnli, three seeds, languages en, qaa, qab, qac and zz (not in the language
# table). Baseline test scores are the same in every seed; each chain adds a per-seed gain.

BASE = {"en": 0.80, "qaa": 0.60, "qab": 0.40, "qac": 0.50, "zz": 0.50}
MNLI_GAIN = {  # per language, per seed 0, 1, 2
    "en": (0.04, 0.05, 0.06),
    "qaa": (0.02, 0.03, 0.04),
    "qab": (0.00, 0.01, 0.02),
    "qac": (0.02, 0.02, 0.02),  # identical in every seed: no spread
    "zz": (0.01, 0.01, 0.04),
}
# the same gain at every language, per seed
SEED_GAIN = {
    "mini_mnli>mini_qqp": (0.03, 0.04, 0.05),
    "mini_qqp>mini_mnli": (0.01, 0.02, 0.03),
    "mini_mnli+mini_qqp": (0.02, 0.02, 0.05),
    "mini_mnli_mt": (0.01, 0.03, 0.02),
}
TRANSLATIONS = {"mini_mnli_mt": "mini_mnli"}
QA, PAWS = "qa_t", "paws_t"


@dataclass(frozen=True)
class Lang:
    family: str | None
    script: str | None
    resource_group: str | None
    dist: float | None

    def distance(self, kind: str) -> float | None:
        return self.dist


@dataclass(frozen=True)
class Task:
    category: str | None
    benchmark_metrics: tuple[str, ...]


LANGUAGES = {
    "en": Lang("Indo-European", "Latn", "high", 0.0),
    "qaa": Lang("F1", "Latn", "high", 0.2),
    "qab": Lang("F1", "Cyrl", "low", 0.9),
    "qac": Lang("F2", "Latn", None, 0.5),
}
TASKS = {
    XNLI: Task("classification", ("accuracy",)),
    PAWS: Task("classification", ("accuracy",)),
    QA: Task("question_answering", ("exact_match", "f1")),
}


def _trial(
    run_id: str,
    chain: str,
    seed: int,
    *,
    test: dict[str, float],
    dev_en: float,
    metric: str = "accuracy",
    extra: dict[str, float] | None = None,
    status: str = "FINISHED",
) -> Run:
    """A trial whose dev score equals its test score in every language but English."""
    *intermediate, target = chain.split(">")
    metrics = {f"test/{target}/{lang}/{metric}": v for lang, v in test.items()}
    metrics |= {f"dev/{target}/{lang}/{metric}": v for lang, v in test.items() if lang != "en"}
    metrics[f"dev/{target}/en/{metric}"] = dev_en
    metrics |= extra or {}
    return Run(
        run_id=run_id,
        status=status,
        params={
            "target": target,
            "chain": chain,
            "intermediate": json.dumps(intermediate),
            "seed": str(seed),
            "metric": metric,
            "config_key": f"k:{chain}",
        },
        tags={"raystilts.target": target},
        metrics=metrics,
    )


def issue5_runs() -> list[Run]:
    runs = []
    for seed in range(3):
        runs.append(_trial(f"b{seed}", XNLI, seed, test=dict(BASE), dev_en=0.70))
        mnli = {lang: BASE[lang] + MNLI_GAIN[lang][seed] for lang in BASE}
        runs.append(_trial(f"m{seed}", f"mini_mnli>{XNLI}", seed, test=mnli, dev_en=0.75))
        for i, (inter, gain) in enumerate(SEED_GAIN.items()):
            shifted = {lang: v + gain[seed] for lang, v in BASE.items()}
            runs.append(_trial(f"c{i}{seed}", f"{inter}>{XNLI}", seed, test=shifted, dev_en=0.72))
    # ignored: a FAILED run with test scores, a run stopped after its dev evaluation
    runs.append(
        _trial(
            "fail",
            f"mini_mnli>{XNLI}",
            3,
            test=dict.fromkeys(BASE, 0.99),
            dev_en=0.9,
            status="FAILED",
        )
    )
    stopped = _trial("stop", f"mini_mnli>{XNLI}", 4, test={}, dev_en=0.99, status="KILLED")
    runs.append(stopped)
    # two more targets, one seed: a classification task and a QA task scored on EM and F1
    runs.append(_trial("pb", PAWS, 0, test={"en": 0.9, "qaa": 0.7}, dev_en=0.8))
    runs.append(_trial("pm", f"mini_mnli>{PAWS}", 0, test={"en": 0.95, "qaa": 0.85}, dev_en=0.9))
    for run_id, chain, em, f1 in (
        ("qb", QA, (0.5, 0.3), (0.7, 0.5)),
        ("qm", f"mini_mnli>{QA}", (0.6, 0.4), (0.8, 0.6)),
    ):
        target = chain.split(">")[-1]
        ems = {
            f"test/{target}/{lang}/exact_match": v
            for lang, v in zip(("en", "qaa"), em, strict=True)
        }
        runs.append(
            _trial(
                run_id,
                chain,
                0,
                test=dict(zip(("en", "qaa"), f1, strict=True)),
                dev_en=f1[0],
                metric="f1",
                extra=ems,
            )
        )
    return runs


def _row(frame: pl.DataFrame, **where: object) -> dict[str, object]:
    rows = frame.filter(**where).to_dicts()
    assert len(rows) == 1, (where, rows)
    return rows[0]


@pytest.fixture(scope="module")
def long5() -> pl.DataFrame:
    return runs_to_long(issue5_runs())


MNLI = f"mini_mnli>{XNLI}"


def test_gain_per_language_pairs_seeds(long5: pl.DataFrame) -> None:
    per_lang = gains(long5, grouping="lang")
    qaa = _row(per_lang, chain=MNLI, group="qaa")
    # diffs 0.02, 0.03, 0.04 (the FAILED and the stopped run are ignored: 3 seeds)
    assert qaa["n_seeds"] == 3 and qaa["unit"] == "seeds" and qaa["n_units"] == 3
    assert qaa["gain"] == pytest.approx(0.03)
    assert qaa["score"] == pytest.approx(0.63) and qaa["baseline"] == pytest.approx(0.60)
    # paired t-test over seeds: t = 0.03 / (0.01 / sqrt 3) = 5.196 with 2 df
    assert qaa["p_value"] == pytest.approx(0.0351, abs=2e-4)
    expected = stats.ttest_rel([0.62, 0.63, 0.64], [0.6, 0.6, 0.6]).pvalue
    assert qaa["p_value"] == pytest.approx(expected)
    # a percentile bootstrap of 3 seeds stays inside their range and around the mean
    assert 0.02 - 1e-9 <= qaa["ci_low"] < 0.03 < qaa["ci_high"] <= 0.04 + 1e-9
    # the same gain in every seed: the t-test limit, p = 0, and a zero-width interval
    qac = _row(per_lang, chain=MNLI, group="qac")
    assert qac["gain"] == pytest.approx(0.02) and qac["p_value"] == 0.0
    assert qac["ci_low"] == pytest.approx(0.02) and qac["ci_high"] == pytest.approx(0.02)
    # a worse gain gets a larger p
    assert _row(per_lang, chain=MNLI, group="qab")["p_value"] > qaa["p_value"]


def test_gain_over_all_languages_and_groups(long5: pl.DataFrame) -> None:
    everything = _row(gains(long5, grouping="all"), chain=MNLI)
    # per-seed means over the 5 languages: .09/5, .12/5, .18/5
    assert everything["gain"] == pytest.approx((0.018 + 0.024 + 0.036) / 3)
    assert everything["n_langs"] == 5 and everything["unit"] == "seeds"
    family = gains(long5, grouping="family", languages=LANGUAGES)
    f1 = _row(family, chain=MNLI, group="F1")  # qaa and qab, English excluded
    assert f1["n_langs"] == 2 and f1["gain"] == pytest.approx(0.02)
    # per-seed means .01, .02, .03: t = 0.02 / (0.01 / sqrt 3) = 3.464, 2 df
    assert f1["p_value"] == pytest.approx(0.0742, abs=2e-4)
    assert set(family.filter(chain=MNLI)["group"]) == {"F1", "F2", "unknown"}  # zz: unknown
    resource = gains(long5, grouping="resource", languages=LANGUAGES)
    assert _row(resource, chain=MNLI, group="low")["gain"] == pytest.approx(0.01)
    assert _row(resource, chain=MNLI, group="n/a")["gain"] == pytest.approx(0.02)  # qac
    assert "en" not in resource["group"].to_list()
    assert _row(resource, chain=MNLI, group="high")["n_langs"] == 1  # qaa; en is the source
    distance = gains(long5, grouping="distance", languages=LANGUAGES)
    assert set(distance.filter(chain=MNLI)["group"]) == {
        "d<0.33",
        "0.33<=d<0.67",
        "d>=0.67",
        "unknown",
    }
    assert _row(distance, chain=MNLI, group="d>=0.67")["gain"] == pytest.approx(0.01)
    assert unknown_languages(long5, LANGUAGES) == ["zz"]


def test_one_seed_resamples_languages(long5: pl.DataFrame) -> None:
    one = long5.filter(pl.col("seed") == 0)
    per_lang = _row(gains(one, grouping="lang"), chain=MNLI, group="qaa")
    assert per_lang["unit"] == "none" and per_lang["ci_low"] is None
    assert per_lang["p_value"] is None
    overall = _row(gains(one, grouping="all"), chain=MNLI)
    assert overall["unit"] == "languages" and overall["n_units"] == 5
    assert overall["gain"] == pytest.approx(0.018)  # (.04 + .02 + 0 + .02 + .01) / 5
    assert 0.0 <= overall["ci_low"] < 0.018 < overall["ci_high"] <= 0.04
    assert 0 < overall["p_value"] < 0.2  # four of five languages gain


def test_distance_correlation(long5: pl.DataFrame) -> None:
    corr = distance_correlations(gains(long5, grouping="lang"), LANGUAGES)
    row = _row(corr, chain=MNLI, kind="syntactic")
    # (distance, gain): (.2, .03), (.5, .02), (.9, .01); en is the source, zz has no distance
    assert row["n_langs"] == 3
    assert row["spearman_rho"] == pytest.approx(-1.0)
    assert row["pearson_r"] == pytest.approx(-0.007 / math.sqrt(0.74 / 3 * 0.0002), abs=1e-4)
    # a chain with the same gain everywhere has no correlation
    flat = _row(corr, chain=f"mini_qqp>mini_mnli>{XNLI}", kind="genetic")
    assert flat["pearson_r"] is None and flat["spearman_rho"] is None


def test_ordering_effects(long5: pl.DataFrame) -> None:
    order = ordering_effects(long5).filter(group="all")
    assert order.height == 3
    assert set(order["tasks"]) == {"mini_mnli, mini_qqp"}
    mix = f"mini_mnli+mini_qqp>{XNLI}"
    seq, rev = f"mini_mnli>mini_qqp>{XNLI}", f"mini_qqp>mini_mnli>{XNLI}"
    a = _row(order, chain=mix, chain_b=seq)
    assert a["kind"] == "mixture vs order"
    assert a["diff"] == pytest.approx(-0.01)  # seeds: -.01, -.02, 0
    assert a["exceeds_noise"] is False
    b = _row(order, chain=mix, chain_b=rev)
    assert b["diff"] == pytest.approx(0.01)  # .01, 0, .02
    c = _row(order, chain=seq, chain_b=rev)
    assert c["kind"] == "order" and c["diff"] == pytest.approx(0.02)  # .02 in every seed
    assert c["p_value"] == 0.0 and c["exceeds_noise"] is True
    assert c["seed_sd"] == pytest.approx(0.01)  # both chains' seed means spread by .01
    per_lang = ordering_effects(long5).filter(chain=seq, chain_b=rev, group="qab")
    assert per_lang["diff"].item() == pytest.approx(0.02)


def test_translation_effects(long5: pl.DataFrame) -> None:
    effects = translation_effects(long5, TRANSLATIONS)
    row = _row(effects, group="all")
    assert row["chain"] == f"mini_mnli_mt>{XNLI}" and row["english_chain"] == MNLI
    # seeds: (.01, .03, .02) translated vs (.018, .024, .036) English
    assert row["diff"] == pytest.approx((-0.008 + 0.006 - 0.016) / 3)
    assert row["unit"] == "seeds" and row["n_seeds"] == 3
    assert translation_effects(long5, {}).is_empty()


def test_selection_comparison(long5: pl.DataFrame) -> None:
    table = selection_comparison(long5)
    qaa = _row(table, target=XNLI, lang="qaa")
    assert qaa["en_chain"] == MNLI  # best English dev (0.75)
    assert qaa["en_test"] == pytest.approx(0.63) and qaa["en_gain"] == pytest.approx(0.03)
    assert qaa["lang_chain"] == f"mini_mnli>mini_qqp>{XNLI}"  # best qaa dev: 0.64
    assert qaa["lang_test"] == pytest.approx(0.64) and qaa["lang_gain"] == pytest.approx(0.04)
    en = _row(table, target=XNLI, lang="en")
    assert en["lang_chain"] == en["en_chain"] == MNLI


def test_benchmark_scores_the_xtreme_way(long5: pl.DataFrame) -> None:
    bench = benchmark_scores(long5, TASKS)

    def score(system: str, level: str, name: str) -> float:
        return float(_row(bench, system=system, level=level, name=name)["score"])  # type: ignore[arg-type]

    # QA task = (mean EM (.5+.3)/2 + mean F1 (.7+.5)/2) / 2
    assert score("baseline", "task", QA) == pytest.approx(0.5)
    assert score("baseline", "task", XNLI) == pytest.approx(0.56)  # (.8+.6+.4+.5+.5)/5
    assert score("baseline", "category", "classification") == pytest.approx((0.56 + 0.8) / 2)
    assert score("baseline", "overall_xtreme", "all tasks") == pytest.approx((0.56 + 0.8 + 0.5) / 3)
    assert score("baseline", "overall_xtreme_r", "all categories") == pytest.approx(
        ((0.56 + 0.8) / 2 + 0.5) / 2
    )
    best = "best chain per target"
    assert score(best, "task", XNLI) == pytest.approx(0.586)  # + mean gain .13/5
    assert score(best, "task", QA) == pytest.approx(0.6)
    overall = _row(bench, system=best, level="overall_xtreme")
    assert overall["gain"] == pytest.approx((0.586 + 0.9 + 0.6) / 3 - (0.56 + 0.8 + 0.5) / 3)
    # a system run for one target only: a task gain, no overall gain
    mt = _row(bench, system="mini_mnli_mt", level="overall_xtreme")
    assert mt["n_tasks"] == 1 and mt["gain"] is None
    assert _row(bench, system="mini_mnli_mt", level="task")["gain"] == pytest.approx(0.02)


def test_analyze_and_render(long5: pl.DataFrame) -> None:
    analysis = analyze(long5, tasks=TASKS, languages=LANGUAGES, translations=TRANSLATIONS)
    assert analysis.unknown_languages == ["zz"]
    assert any("zz" in note for note in analysis.notes)
    assert set(analysis.gains["grouping"]) == {"lang", "all", *GROUPINGS}
    table = render_analysis(analysis, "table", by="family", select="both")
    assert "Selection on English dev" in table and "Ordering effects" in table
    assert any(line.split()[:3] == [XNLI, "mini_mnli", "F1"] for line in table.splitlines())
    assert "zz" in table  # the unknown language is reported
    loaded = json.loads(render_analysis(analysis, "json"))
    assert loaded["unknown_languages"] == ["zz"] and "paired" in loaded["methods"]
    rows = list(csv.DictReader(io.StringIO(render_analysis(analysis, "csv", by="resource"))))
    assert {r["grouping"] for r in rows} == {"resource"}
    with pytest.raises(ValueError, match="family"):
        render_analysis(analysis, "table", by="genus")
    bare = analyze(long5)
    assert bare.benchmark.is_empty() and bare.correlations.is_empty()
    assert "no language table" in " ".join(bare.notes)


def write_store(path: Path, runs: list[Run], experiment: str = "issue5") -> str:
    """Write ``runs`` into a real MLflow sqlite store, one batch per run (fast)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from raystilts.tracking.store import default_tracking_uri

    uri = default_tracking_uri(path)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(experiment, artifact_location=(path / "art").as_uri())
    for run in runs:
        created = client.create_run(experiment_id, run_name=run.run_id)
        run_id = created.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 1) for k, v in run.metrics.items()],
            params=[Param(k, v) for k, v in run.params.items()],
            tags=[RunTag(k, v) for k, v in run.tags.items()],
            synchronous=True,
        )
        client.set_terminated(run_id, status=run.status)
    return uri


def test_every_analysis_through_a_real_mlflow_store(tmp_path: Path, long5: pl.DataFrame) -> None:
    from raystilts.tracking.store import load_runs

    uri = write_store(tmp_path, issue5_runs())
    records = load_runs(tracking_uri=uri, experiment="issue5")
    assert len(records) == len(issue5_runs())
    stored = analyze(
        runs_to_long(records), tasks=TASKS, languages=LANGUAGES, translations=TRANSLATIONS
    )
    direct = analyze(long5, tasks=TASKS, languages=LANGUAGES, translations=TRANSLATIONS)
    for name in ("selection", "gains", "correlations", "ordering", "translation", "benchmark"):
        # same runs, same bootstrap seed: the same numbers (up to float summation order)
        assert_frame_equal(getattr(stored, name), getattr(direct, name), check_exact=False)
    assert _row(stored.gains, grouping="lang", chain=MNLI, group="qaa")["gain"] == pytest.approx(
        0.03
    )


# ---------------------------------------------------------------------------------------------
# Review 5-6: gains paired by seed everywhere, per-target seed notes, complete benchmark means.


def _unequal_seeds(chain_seeds: tuple[int, ...]) -> list[Run]:
    """Baseline seed 0 only; the chain gains .02 in seed 0 and .20 in seed 1."""
    runs = [_trial("b0", XNLI, 0, test={"en": 0.80, "qaa": 0.60}, dev_en=0.70)]
    for seed in chain_seeds:
        shift = 0.02 if seed == 0 else 0.20
        test = {"en": 0.80 + shift, "qaa": 0.60 + shift}
        runs.append(_trial(f"m{seed}", MNLI, seed, test=test, dev_en=0.75))
    return runs


def test_best_chain_selection_and_gains_agree_on_unequal_seeds() -> None:
    long = runs_to_long(_unequal_seeds((0, 1)))
    [best] = best_chains(long)
    # all-seed means would give .11 (.91 - .80); only seed 0 pairs with the baseline
    assert best.chain_name == MNLI and best.n_seeds == 2 and best.n_paired_seeds == 1
    assert best.languages == pytest.approx({"en": 0.82, "qaa": 0.62})
    assert best.baseline == pytest.approx({"en": 0.80, "qaa": 0.60})
    assert best.gains == pytest.approx({"en": 0.02, "qaa": 0.02})
    assert best.gain_avg == pytest.approx(0.02) and best.avg == pytest.approx(0.72)
    overall = _row(gains(long, grouping="all"), chain=MNLI)
    assert overall["gain"] == pytest.approx(best.gain_avg) and overall["n_seeds"] == 1
    per_lang = gains(long, grouping="lang")
    for lang, gain in best.gains.items():
        assert _row(per_lang, chain=MNLI, group=lang)["gain"] == pytest.approx(gain)
    selection = selection_comparison(long)
    for lang, gain in best.gains.items():
        row = _row(selection, lang=lang)
        assert row["en_gain"] == pytest.approx(gain)
        assert row["en_test"] == pytest.approx(best.languages[lang])
        assert row["lang_chain"] == MNLI and row["lang_gain"] == pytest.approx(gain)
    assert "over the 1 seed shared with the baseline" in render([best], "table")

    from raystilts.report.render import summary_metrics

    logged = summary_metrics(analyze(long).to_json())
    assert logged[f"best/{XNLI}/gain_avg"] == pytest.approx(0.02)


def test_no_shared_seed_gives_no_gain_and_says_so() -> None:
    long = runs_to_long(_unequal_seeds((1,)))
    [best] = best_chains(long)
    assert best.n_paired_seeds == 0 and best.gains == {}
    assert best.languages == pytest.approx({"en": 1.0, "qaa": 0.8})  # its own seed
    assert best.baseline == pytest.approx({"en": 0.8, "qaa": 0.6})
    assert best.avg == pytest.approx(0.9)
    assert math.isnan(best.baseline_avg) and math.isnan(best.gain_avg)
    assert "share no seed: gains unavailable" in render([best], "table")
    assert gains(long, grouping="all").is_empty()
    [en] = selection_comparison(long).filter(lang="en").to_dicts()
    assert en["en_test"] == pytest.approx(1.0) and en["en_gain"] is None
    analysis = analyze(long)
    assert any("share no seed" in note for note in analysis.notes)
    assert analysis.to_json()["best_chains"][0]["gain_avg"] is None


def test_one_seed_note_is_per_target(long5: pl.DataFrame) -> None:
    # mini_xnli has 3 seeds; paws_t and qa_t one each
    [note] = [n for n in analyze(long5).notes if n.startswith("one seed")]
    assert note.startswith(f"one seed for {PAWS}, {QA}:")
    three = long5.filter(pl.col("target") == XNLI)
    assert not any(n.startswith("one seed") for n in analyze(three).notes)


def test_benchmark_means_need_every_task(long5: pl.DataFrame) -> None:
    bench = benchmark_scores(long5, TASKS)
    # mini_mnli_mt was run before mini_xnli only: no overall or classification mean
    for level in ("overall_xtreme", "overall_xtreme_r", "category"):
        row = _row(bench, system="mini_mnli_mt", level=level)
        assert row["score"] is None and row["gain"] is None, row
    assert _row(bench, system="mini_mnli_mt", level="task")["score"] == pytest.approx(0.58)
    # mini_mnli was run before every target: complete means, with gains
    mnli = _row(bench, system="mini_mnli", level="overall_xtreme")
    assert mnli["n_tasks"] == 3 and mnli["score"] is not None and mnli["gain"] is not None
    table = render_analysis(analyze(long5, tasks=TASKS), "table")
    [line] = [x for x in table.splitlines() if x.split()[:1] == ["mini_mnli_mt"]]
    assert line.split()[1:5] == ["-", "-", "-", "-"]  # XTREME, XTREME-R, both categories
    assert "-: not every task of that column has a score" in table


def test_a_target_without_english_is_selected_on_its_dev_mean() -> None:
    """BUCC and Tatoeba have no English set: the search selects on the dev mean over their
    languages (raystilts.tasks.catalog.selection_key), and so does the analysis."""

    def bucc(run_id: str, chain: str, dev: dict[str, float], test: dict[str, float]) -> Run:
        *intermediate, target = chain.split(">")
        metrics = {f"dev/{target}/{lang}/f1": v for lang, v in dev.items()}
        metrics.update({f"test/{target}/{lang}/f1": v for lang, v in test.items()})
        return Run(
            run_id=run_id,
            status="FINISHED",
            params={
                "target": target,
                "chain": chain,
                "intermediate": json.dumps(intermediate),
                "seed": "0",
                "metric": "f1",
                "config_key": chain,
            },
            metrics=metrics,
        )

    runs = [
        bucc("b", "bucc", {"de": 0.2, "fr": 0.2}, {"de": 0.1, "fr": 0.1}),
        bucc("s", "squad_v1>bucc", {"de": 0.5, "fr": 0.1}, {"de": 0.4, "fr": 0.2}),  # mean 0.3
        bucc("m", "mnli>bucc", {"de": 0.05, "fr": 0.45}, {"de": 0.0, "fr": 0.0}),  # mean 0.25
    ]
    (result,) = best_chains(runs_to_long(runs))
    assert result.chain_name == "squad_v1>bucc"
    assert result.dev_en == pytest.approx(0.3)
    assert result.gain_avg == pytest.approx(0.2)
    assert "avg dev f1 30.0" in render([result], "table")
