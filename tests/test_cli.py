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
