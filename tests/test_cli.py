"""The command line: verbs, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raystilts.cli import main

REPO = Path(__file__).resolve().parents[1]


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_validate_accepts_shipped_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, path
        assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\ntargets: [mini_xnlx]\n", "mini_xnlx"),
        (
            "name: x\ntargets: [mini_xnli]\nintermediate: {tasks: [], max_chain_length: 1}\n",
            "intermediate",
        ),
        ("name: x\ntargets: [mini_xnli]\nintermediate: {lr: {low: 0.01, high: 0.001}}\n", "0.01"),
        (
            "name: x\ntargets: [mini_xnli]\nintermediate: {tasks: [mini_mnli], max_chain_length: 3}\n",
            "max_chain_length",
        ),
        ("name: x\ntargets: [mini_xnli]\nserch: {}\n", "serch"),
        ("name: x\ntargets: [mini_xnli]\nsearch: {seeds: [0, 0]}\n", "duplicates in [0, 0]"),
        ("name: x\ntargets: [mini_xnli\n", "bad.yaml:3:1: invalid YAML"),
    ],
)
def test_validate_rejects_bad_space_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert needle in _err_line(capsys)
    assert main(["search", str(path), "--workdir", str(tmp_path)]) == 2  # search validates first
    assert needle in _err_line(capsys)


def test_missing_space_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in _err_line(capsys)


def test_analyze_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--experiment", "demo", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "127.0.0.1:9" in _err_line(capsys)
    assert main(["analyze", "--experiment", "demo", "--workdir", str(tmp_path)]) == 2
    assert "mlflow.db" in _err_line(capsys)


def test_tasks_json_lists_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"mini_mnli", "mini_xnli", "mini_udpos"}
    assert all({"name", "type", "metric", "languages", "source"} <= r.keys() for r in rows)


def test_console_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "raystilts.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for verb in ("demo", "search", "validate", "analyze", "tasks"):
        assert verb in out


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--address", "127.0.0.1:1"], "--storage-path s3://"),  # a cluster needs shared storage
        (
            ["--address", "127.0.0.1:1", "--storage-path", "STORE"],
            "--address 127.0.0.1:1: nothing answers there",
        ),
        (["--storage-path", "nosuch://x"], "storage path 'nosuch://x'"),
        (["--workers-per-trial", "0"], "--workers-per-trial 0: give an integer >= 1"),
        (["--gpus-per-worker", "0"], "--gpus-per-worker 0.0: give a fraction in (0, 1]"),
        (["--resume"], "--resume: no interrupted search 'demo' under"),  # nothing to resume
    ],
)
def test_cluster_flags_fail_fast_with_one_line(
    flags: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [str(tmp_path / "s") if f == "STORE" else f for f in flags]
    space = str(REPO / "search_spaces" / "demo.yaml")
    assert main(["search", space, "--workdir", str(tmp_path), *flags]) == 2
    assert needle in _err_line(capsys)
    assert not (tmp_path / "ray_results").exists()  # nothing started


def test_validate_prints_the_batch_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(
        "name: x\ntargets: [mini_xnli]\n"
        "training: {batch_size: 32, max_device_batch_size: 8}\n"
        "resources: {workers_per_trial: 2, placement_strategy: spread}\n"
    )
    assert main(["validate", str(space)]) == 0
    assert "2 workers (SPREAD), batch 32 = 2 x 8 x 2 accumulated" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("/nonexistent/model", "model: /nonexistent/model does not exist"),
        ("{tmp}", "has no config.json"),
        ("{tmp}/config.json", "is a file, not a model directory"),
        ("not a/hub--id", "neither a local directory nor a hub id"),
    ],
)
def test_validate_rejects_a_model_that_cannot_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, needle: str
) -> None:
    if model != "{tmp}":  # a directory without config.json is the case "{tmp}" checks
        (tmp_path / "config.json").write_text("{}")
    path = tmp_path / "space.yaml"
    path.write_text(f"name: x\nmodel: '{model.format(tmp=tmp_path)}'\ntargets: [mini_xnli]\n")
    assert main(["validate", str(path)]) == 2
    assert needle in _err_line(capsys)


def test_validate_accepts_a_model_directory_and_hub_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text("{}")
    for model in (str(tmp_path), "FacebookAI/xlm-roberta-large", "xlm-roberta-base"):
        path = tmp_path / "space.yaml"
        path.write_text(f"name: x\nmodel: '{model}'\ntargets: [mini_xnli]\n")
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("where", ["under_a_file", "/proc/raystilts-report"])
def test_report_into_an_unwritable_place_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "report" if where == "under_a_file" else Path(where)
    code = main(["report", "--experiment", "x", "--workdir", str(tmp_path), "--out", str(out)])
    assert code == 2
    assert f"--out {out}: cannot write there" in _err_line(capsys)


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--workdir", "{file}/wd", "--workdir {file}/wd: cannot write there"),
        ("--cache-dir", "{file}/cache", "--cache-dir {file}/cache: cannot write there"),
        ("--data-dir", "{tmp}/missing", "--data-dir {tmp}/missing does not exist"),
    ],
)
def test_search_with_an_unusable_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, needle: str
) -> None:
    (tmp_path / "f").write_text("")
    fill = {"file": str(tmp_path / "f"), "tmp": str(tmp_path)}
    args = ["--workdir", str(tmp_path / "ok"), flag, value.format(**fill)]
    assert main(["search", str(REPO / "search_spaces" / "demo.yaml"), *args]) == 2
    assert needle.format(**fill) in _err_line(capsys)


def test_full_disk_is_one_line_and_a_bug_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from raystilts import cli

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/features")

    monkeypatch.setattr(cli, "cmd_tasks", full)
    assert main(["tasks"]) == 2
    assert _err_line(capsys) == (
        "raystilts: error: /data/features: No space left on device; free some space "
        "(or point --workdir/--cache-dir elsewhere)"
    )

    def bug(args: object) -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/our/own/bug")

    monkeypatch.setattr(cli, "cmd_tasks", bug)
    with pytest.raises(FileNotFoundError):
        main(["tasks"])


def test_a_failed_report_leaves_no_directory_it_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analysis fails (no such experiment) after --out was created for it: the directories
    the command made are gone again; one that was there before stays."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    from raystilts.tracking import Tracker

    Tracker(tracking_uri=uri, experiment="other")  # a store without experiment 'x'
    out = tmp_path / "new" / "report"
    code = main(["report", "--experiment", "x", "--tracking-uri", uri, "--out", str(out)])
    assert code == 2
    assert "experiment 'x' not found" in _err_line(capsys)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    code = main(["report", "--experiment", "x", "--tracking-uri", uri, "--out", str(kept)])
    assert code == 2 and kept.is_dir()


@pytest.mark.parametrize("error", ["mlflow", "user"])
def test_a_report_that_fails_after_a_finished_search_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """The trials are safe in MLflow when attaching the report fails (a server gone, a run
    deleted meanwhile): one line with the command that makes the report, no traceback."""
    from mlflow.exceptions import MlflowException

    from raystilts import cli
    from raystilts.core.errors import UserError
    from raystilts.report import answer

    def fail(**kwargs: object) -> list[str]:
        if error == "mlflow":
            raise MlflowException("Run 'abc' not found\nsecond line")
        raise UserError("experiment 'demo' not found in sqlite:///x.db; known: (none)")

    monkeypatch.setattr(answer, "publish_answer", fail)
    cli._publish({"parent_run_id": "abc", "tracking_uri": "sqlite:///x.db", "experiment": "demo"})
    line = _err_line(capsys)
    assert line.startswith("raystilts: the report was not attached to the search run (")
    assert "Run 'abc' not found" in line if error == "mlflow" else "known: (none)" in line
    assert line.endswith("run: raystilts report --experiment demo --out DIR")


def test_a_prior_experiment_that_does_not_exist_is_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """search.prior.experiments is read right after the tracking store opens: a misspelt name
    costs a second, not Ray's start-up and the tokenization."""
    space = tmp_path / "space.yaml"
    space.write_text("name: p\ntargets: [mini_xnli]\nsearch: {prior: {experiments: [pubb]}}\n")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--workdir", str(tmp_path / "wd"), "--tracking-uri", uri]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main(["search", str(space), *args]) == 2
    line = _err_line(capsys)
    assert "search.prior.experiments: experiment 'pubb' not found" in line
    assert "raystilts import TABLE.csv" in line
    assert not (tmp_path / "cache" / "features").exists()  # nothing was prepared
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_readme_synopsis_names_every_verb_and_flag() -> None:
    """The README's command synopsis is what a newcomer reads first: every verb and every flag
    the parser accepts is in it (a flag added to the CLI and not to the README fails here)."""
    import argparse

    from raystilts.cli import _parser

    readme = (REPO / "README.md").read_text()
    section = readme.split("## The command line", 1)[1].split("\n## ", 1)[0]
    synopsis = section.split("```bash", 1)[1].split("```", 1)[0]
    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{verb} {flag}"
        for verb, parser in subparsers.choices.items()
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help" and flag not in synopsis
    ]
    missing += [verb for verb in subparsers.choices if f"raystilts {verb}" not in synopsis]
    assert not missing, f"README's synopsis misses {missing}"


def test_a_damaged_cached_base_model_is_one_line_that_says_to_delete_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded model in the cache, damaged (a full disk, a killed copy): the line names the
    directory to delete, not the hub (the search never reaches Ray)."""
    from raystilts.train.pretrain import PretrainSettings

    cache = tmp_path / "cache"
    entry = cache / f"embedded-model-{PretrainSettings().key()}"
    entry.mkdir(parents=True)
    (entry / "raystilts_pretrain.json").write_text("{}")
    (entry / "config.json").write_text("{bad")
    args = ["--workdir", str(tmp_path / "wd"), "--cache-dir", str(cache)]
    assert main(["search", str(REPO / "search_spaces" / "demo.yaml"), *args]) == 2
    assert f"the cached embedded model {entry} is damaged (" in _err_line(capsys)


def test_max_length_beyond_the_models_positions_is_one_line(
    tmp_path: Path, tiny_model: Path, mini_data: Path
) -> None:
    """training.max_length longer than the model's position table failed every trial inside
    the workers (an index error); now it is one line before tokenization."""
    from raystilts.core.errors import UserError
    from raystilts.train.workspace import prepare_workspace

    kw = {"model": str(tiny_model), "needs": [], "cache_dir": tmp_path, "data_dir": mini_data}
    prepare_workspace(max_length=64, log=False, **kw)  # type: ignore[arg-type]  # its length
    with pytest.raises(UserError, match=r"training\.max_length: 65 is longer than model .* \(64"):
        prepare_workspace(max_length=65, log=False, **kw)  # type: ignore[arg-type]
