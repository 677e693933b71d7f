"""`raystilts analyze` and `raystilts report` on a real MLflow store of hand-computable runs."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_analysis import MNLI, TASKS, XNLI, issue5_runs, write_store

from raystilts.cli import main

EXPERIMENT = "issue5"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_store(tmp_path_factory.mktemp("store"), issue5_runs(), EXPERIMENT)


@pytest.fixture(scope="module")
def long5_analysis() -> dict[str, Any]:
    from raystilts.analysis.tables import analyze, runs_to_long

    return analyze(runs_to_long(issue5_runs()), tasks=TASKS).to_json()


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_files_and_summary_run(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from raystilts.tracking.store import load_runs

    out = tmp_path / "report"
    code, printed, err = _run(
        ["report", "--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(out)], capsys
    )
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "report.html",
        "report.md",
        "analysis.json",
        "heatmap.png",
        "distance.png",
        "languages.png",
    }
    for png in ("heatmap.png", "distance.png", "languages.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)

    page = (out / "report.html").read_text()
    inlined = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(inlined) == 3 and base64.b64decode(inlined[0]).startswith(PNG_MAGIC)
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained: no other resource
    assert "Gain by family" in page and "bootstrap" in page
    assert "d&lt;0.33" in page  # group labels are escaped
    markdown = (out / "report.md").read_text()
    assert "![Gain per language](languages.png)" in markdown
    assert "| mini_xnli | mini_mnli>mini_xnli |" in markdown
    assert "shown only for a system with a score for every task" in markdown

    numbers = json.loads((out / "analysis.json").read_text())
    best = {r["target"]: r for r in numbers["best_chains"]}
    assert best[XNLI]["chain_name"] == MNLI
    [qaa] = [
        r
        for r in numbers["gains"]
        if r["grouping"] == "lang" and r["chain"] == MNLI and r["group"] == "qaa"
    ]
    assert qaa["gain"] == pytest.approx(0.03)
    # the embedded language table knows the synthetic languages; "zz" is reported, not dropped
    assert numbers["unknown_languages"] == ["zz"]
    assert "zz" in page
    assert numbers["distances"]["qac"]["syntactic"] == pytest.approx(0.6)

    # the summary run: FINISHED, tagged, the report files as artifacts, invisible to load_runs
    run_id = printed.strip().split("summary run ")[1].split()[0]
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["raystilts.kind"] == "summary"
    assert {a.path for a in client.list_artifacts(run_id)} >= {"report.html", "heatmap.png"}
    assert run.data.metrics[f"best/{XNLI}/gain_avg"] == pytest.approx(0.026)
    assert len(load_runs(tracking_uri=store, experiment=EXPERIMENT)) == len(issue5_runs())


def test_report_without_mlflow_logs_nothing(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id  # type: ignore[union-attr]
    before = len(client.search_runs([experiment_id]))
    args = ["report", "--experiment", EXPERIMENT, "--tracking-uri", store]
    code, printed, _ = _run([*args, "--out", str(tmp_path / "r"), "--no-mlflow"], capsys)
    assert code == 0 and "summary run" not in printed
    assert len(client.search_runs([experiment_id])) == before


def test_report_errors_are_one_line(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["report", "--experiment", EXPERIMENT, "--tracking-uri", store]
    code, _, err = _run([*args, "--out", str(blocker), "--no-mlflow"], capsys)
    assert code == 2 and "is a file" in err and "\n" not in err.strip()
    code, _, err = _run(
        ["report", "--experiment", "nope", "--tracking-uri", store, "--out", str(tmp_path)],
        capsys,
    )
    assert code == 2 and "'nope' not found" in err


def test_analyze_cli_formats(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["analyze", "--experiment", EXPERIMENT, "--tracking-uri", store]
    code, table, _ = _run([*base, "--select", "both", "--by", "distance"], capsys)
    assert code == 0
    assert f"{XNLI}  best chain: {MNLI}" in table
    assert "Selection on English dev (strict zero-shot) vs on each language's dev" in table
    rows = {
        cells[2]: cells
        for cells in (line.split() for line in table.splitlines())
        if cells[:2] == [XNLI, "mini_mnli"]
    }
    # built-in syntactic distances: qaa 0.2 | qab 0.4, qac 0.6 | zz unknown
    assert rows["d<0.33"][5] == "+3.0"
    assert rows["0.33<=d<0.67"][3:6] == ["2", "3", "+1.5"]  # seeds (.01, .015, .02)
    assert rows["unknown"][5] == "+2.0"
    assert "Benchmark aggregate" in table and "note: languages without" in table

    code, text, _ = _run([*base, "--format", "json"], capsys)
    loaded = json.loads(text)
    assert {"best_chains", "gains", "ordering", "translation", "benchmark", "methods"} <= set(
        loaded
    )
    # the catalog has no translated task: the translated chain of the fixture stays unpaired
    assert loaded["translation"] == []

    code, text, _ = _run([*base, "--format", "csv", "--by", "lang"], capsys)
    rows = list(csv.DictReader(io.StringIO(text)))
    qaa = next(r for r in rows if r["chain"] == MNLI and r["group"] == "qaa")
    assert float(qaa["gain"]) == pytest.approx(0.03)
    assert {"ci_low", "ci_high", "p_value", "unit"} <= set(qaa)


def test_heatmap_stars_p_zero() -> None:
    from raystilts.report.render import _close, _heatmap

    def row(target: str, p: float | None, unit: str = "seeds") -> dict[str, object]:
        chain = f"mini_mnli>{target}"
        return {
            "grouping": "all",
            "target": target,
            "chain": chain,
            "label": "mini_mnli",
            "gain": 0.02,
            "p_value": p,
            "unit": unit,
        }

    # p = 0: the same difference in every seed (METHODS); p = None: no test
    rows = [row("a", 0.0), row("b", 0.2), row("c", None), row("d", 0.0, "languages")]
    figure = _heatmap({"gains": rows}, {})
    assert figure is not None
    texts = sorted(t.get_text() for t in figure.axes[0].texts)
    _close(figure)
    assert texts == ["+2.0", "+2.0", "+2.0", "+2.0*"]


def test_benchmark_table_shows_a_partial_mean_as_a_dash(long5_analysis: dict[str, Any]) -> None:
    from raystilts.report.render import _benchmark

    table = _benchmark(long5_analysis["benchmark"])
    mt = next(r for r in table.rows if r[0] == "mini_mnli_mt")
    # columns: XTREME, XTREME-R, classification, question_answering, then the three tasks
    assert mt[1:5] == ("-", "-", "-", "-")
    assert mt[5:] == ("58.0 (+2.0)", "-", "-")
    mnli = next(r for r in table.rows if r[0] == "mini_mnli")
    assert "-" not in mnli
    assert "'-' otherwise" in table.caption


def test_report_shares_the_analysis_names_without_polars() -> None:
    import subprocess
    import sys

    from raystilts.analysis import tables as analysis
    from raystilts.report import render as report

    assert (report.ALL, report.SOURCE_LANG, report.GROUPINGS) == (
        analysis.ALL,
        analysis.SOURCE_LANG,
        analysis.GROUPINGS,
    )
    check = "import sys, raystilts.report.render; sys.exit('polars' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0
