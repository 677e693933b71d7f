"""The ``raystilts`` command: demo, search, validate, analyze, report, import, tasks, fixtures.

    raystilts demo                                   # a small real search on the embedded benchmark
    raystilts validate search_spaces/demo.yaml
    raystilts search search_spaces/demo.yaml --workdir runs
    raystilts analyze --experiment demo --format json

User mistakes (bad YAML, unknown task, unreachable server, unwritable directory, full disk...)
print one line and exit with 2. SIGTERM and Ctrl-C stop a search cleanly (raystilts.core.stopping):
exit 143 or 130, and the last line is the command that continues it with --resume.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raystilts.core.checks import ENVIRONMENT_ERRNOS, environment_error
from raystilts.core.errors import UserError
from raystilts.core.stopping import SearchInterrupted, installed

if TYPE_CHECKING:
    from raystilts.core.space import SearchSpace
    from raystilts.tasks.catalog import TaskSpec

__all__ = ["main"]

DEFAULT_WORKDIR = Path("raystilts_runs")


def _catalog() -> dict[str, TaskSpec]:
    from raystilts.tasks.catalog import CATALOG

    return CATALOG


def _load(path: str) -> SearchSpace:
    from raystilts.core.space import load_space

    return load_space(path, catalog=_catalog())


def _tracking_uri(args: argparse.Namespace) -> str:
    from raystilts.tracking.store import default_tracking_uri

    workdir = Path(args.workdir)
    return (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)
    )


def _with_resources(space: SearchSpace, args: argparse.Namespace) -> SearchSpace:
    """The space with ``--workers-per-trial``/``--gpus-per-worker`` applied."""
    import dataclasses

    res = space.resources
    if args.workers_per_trial is not None:
        if args.workers_per_trial < 1:
            raise UserError(f"--workers-per-trial {args.workers_per_trial}: give an integer >= 1")
        res = dataclasses.replace(res, workers_per_trial=args.workers_per_trial)
    if args.gpus_per_worker is not None:
        g = args.gpus_per_worker
        if not (0 < g <= 1 or (g > 1 and float(g).is_integer())):
            raise UserError(
                f"--gpus-per-worker {g}: give a fraction in (0, 1] (trials share a GPU) or a "
                "whole number "
                "(or leave it out and set resources.use_gpu: false for CPU workers)"
            )
        res = dataclasses.replace(res, gpus_per_worker=args.gpus_per_worker, use_gpu=True)
    return dataclasses.replace(space, resources=res)


def _search(space_path: str, args: argparse.Namespace) -> dict[str, Any]:
    space = _with_resources(_load(space_path), args)
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # A new local Ray uses token auth by default and warns so on every start; saying so
        # explicitly keeps the same security, quietly. Ray reads this when it is imported:
        # set after `import ray`, the GCS asks for a token that the driver never sends.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from raystilts.core.checks import readable_dir, writable_dir
    from raystilts.search import SearchRun, run_search
    from raystilts.train.workspace import default_cache_dir

    workdir = writable_dir(Path(args.workdir).resolve(), "--workdir")
    cache = Path(args.cache_dir).resolve() if args.cache_dir else default_cache_dir()
    if args.data_dir:
        readable_dir(Path(args.data_dir), "--data-dir")
    run = SearchRun(
        workdir=workdir,
        cache_dir=writable_dir(
            cache, "--cache-dir" if args.cache_dir else "cache ($RAYSTILTS_CACHE)"
        ),
        tracking_uri=_tracking_uri(args),
        address=args.address or os.environ.get("RAY_ADDRESS"),
        storage_path=_storage(args.storage_path),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        resume=bool(getattr(args, "resume", False)),
    )
    print(
        f"search '{space.name}': targets {', '.join(space.targets)}; MLflow {run.tracking_uri}",
        flush=True,
    )
    return run_search(space, run=run)


def _storage(path: str | None) -> str | None:
    """Tune wants an absolute path or a URI (s3://, gs://...): make a local path absolute."""
    if path is None or "://" in path:
        return path
    return str(Path(path).resolve())


def _analyze(
    experiment: str,
    tracking_uri: str,
    fmt: str,
    *,
    full: bool = False,
    select: str = "en",
    by: str = "none",
    distance: str = "syntactic",
) -> str:
    """The best chains (``full=False``: what a search ends with) or every analysis."""
    from raystilts.analysis.tables import best_chains, render, render_analysis, runs_to_long

    if not full:
        from raystilts.tracking.store import load_runs

        runs = load_runs(tracking_uri=tracking_uri, experiment=experiment)
        _say_unused(runs)
        shown = render(best_chains(runs_to_long(runs)), fmt)  # type: ignore[arg-type]
        return shown + _selection_text(experiment, tracking_uri) if fmt == "table" else shown
    analysis = _full_analysis(experiment, tracking_uri, distance=distance)
    shown = render_analysis(analysis, fmt, by=by, select=select)  # type: ignore[arg-type]
    return shown + _selection_text(experiment, tracking_uri) if fmt == "table" else shown


def _selection_notes(experiment: str, tracking_uri: str) -> list[str]:
    """Targets whose best chain is within one seed sd of others (raystilts.analysis.selection)."""
    from raystilts.analysis import runs_to_long
    from raystilts.analysis.selection import selection_checks, selection_notes
    from raystilts.tracking import load_runs

    runs = load_runs(tracking_uri=tracking_uri, experiment=experiment)
    return selection_notes(selection_checks(runs_to_long(runs)))


def _selection_text(experiment: str, tracking_uri: str) -> str:
    return "".join(f"\nnote: {n}" for n in _selection_notes(experiment, tracking_uri))


def _say_unused(runs: Any) -> None:
    """Runs the analyses cannot use are never dropped silently: one line on stderr."""
    from raystilts.analysis import describe_unused

    line = describe_unused(runs)
    if line:
        print(line, file=sys.stderr)


def _full_analysis(experiment: str, tracking_uri: str, *, distance: str = "syntactic") -> Any:
    """Every analysis of an experiment, with the catalog's tasks and translations and the
    language table (``raystilts.core.languages``)."""
    from raystilts.analysis.tables import analyze, runs_to_long
    from raystilts.core.languages import load_languages
    from raystilts.tracking.store import load_runs

    runs = load_runs(tracking_uri=tracking_uri, experiment=experiment)
    if not runs:
        raise UserError(f"experiment {experiment!r} has no trial runs yet; run a search first")
    _say_unused(runs)
    catalog = _catalog()
    return analyze(
        runs_to_long(runs),
        tasks=catalog,
        languages=load_languages(),
        translations={n: t.translation_of for n, t in catalog.items() if t.translation_of},
        distance_kind=distance,
    )


def _ui_hint(tracking_uri: str, experiment: str) -> str:
    """How to open the experiment's runs table (model-training mode, not the GenAI overview)."""
    from raystilts.tracking import Tracker, ui_url

    experiment_id = Tracker(tracking_uri=tracking_uri, experiment=experiment).experiment_id
    if tracking_uri.startswith("sqlite:"):
        mlflow = Path(sys.executable).parent / "mlflow"  # the one installed beside raystilts
        exe = str(mlflow) if mlflow.exists() else "mlflow"
        return (
            f"{exe} ui --backend-store-uri {tracking_uri} --port 5000\n"
            f"  then open {ui_url('http://127.0.0.1:5000', experiment_id)}"
        )
    return f"open {ui_url(tracking_uri, experiment_id)}"


def _publish(summary: dict[str, Any]) -> None:
    """The best chains as the parent run's description, the report as its artifacts."""
    parent = summary.get("parent_run_id")
    if not parent:
        return
    from raystilts.report.answer import publish_answer
    from raystilts.tracking import TRACKING_ERRORS

    errors: tuple[type[Exception], ...] = (*TRACKING_ERRORS, ValueError)
    try:
        publish_answer(
            tracking_uri=str(summary["tracking_uri"]),
            experiment=str(summary["experiment"]),
            parent_run_id=str(parent),
        )
    except errors as e:  # the runs are safe in MLflow; the report can be made again
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(
            f"raystilts: the report was not attached to the search run ({why}); "
            f"run: raystilts report --experiment {summary['experiment']} --out DIR",
            file=sys.stderr,
        )


def _summarize(summary: dict[str, Any]) -> None:
    """What a search ends with: the best chain per target and how to open the MLflow UI."""
    uri = str(summary["tracking_uri"])
    trials = ", ".join(f"{t}: {n}" for t, n in summary["trials"].items())
    print(f"\n{summary['experiment']}: trials {trials} in {summary['seconds']:.0f}s\n")
    print(_analyze(str(summary["experiment"]), uri, "table"))
    _publish(summary)
    print(
        "\nThe best chains and the report are on the search's run; compare the trials in the "
        f"MLflow UI:\n  {_ui_hint(uri, str(summary['experiment']))}"
    )


def _finish(summary: dict[str, Any]) -> int:
    _summarize(summary)
    if sum(summary["failed"].values()) == sum(summary["trials"].values()):
        print(
            "raystilts: every trial failed; see the error files under the Tune storage path",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    space = resources.files("raystilts").joinpath("spaces/demo.yaml")
    with resources.as_file(space) as path:
        return _finish(_search(str(path), args))


def cmd_search(args: argparse.Namespace) -> int:
    return _finish(_search(args.space, args))


def cmd_validate(args: argparse.Namespace) -> int:
    space = _load(args.space)
    n = len(space.targets)
    print(
        f"{args.space}: ok ({n} target{'s' * (n != 1)}, pool {', '.join(space.intermediate.tasks) or '-'}, chains of {space.intermediate.min_chain_length}-{space.intermediate.max_chain_length} phases)"
    )
    res = space.resources
    workers = res.workers_per_trial
    micro, steps = space.training.accumulation(workers)
    print(
        f"  per trial: {workers} worker{'s' * (workers != 1)} ({res.placement_strategy}), "
        f"batch {workers * micro * steps} = {workers} x {micro} x {steps} accumulated"
        + ("" if workers * micro * steps == space.training.batch_size else
           f" (batch_size {space.training.batch_size} does not split evenly)")
    )  # fmt: skip
    if res.use_gpu is not False:  # how a cluster's GPUs fill: size max_concurrent from this
        per_gpu, limit = res.trials_per_gpu(), space.search.max_concurrent
        print(
            f"  GPUs: {res.gpus_per_worker:g} per worker, {res.workers_per_gpu()} worker(s) per "
            f"GPU, {per_gpu:g} trial(s) per GPU; max_concurrent {limit} (all targets) fills "
            f"{limit / per_gpu:g} GPU(s) (set it to GPUs x {per_gpu:g} to fill a cluster)"
        )
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    print(
        _analyze(
            args.experiment,
            _tracking_uri(args),
            args.format,
            full=True,
            select=args.select,
            by=args.by,
            distance=args.distance,
        )
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from raystilts.core.checks import output_dir

    uri = _tracking_uri(args)
    # checked before minutes of analysis; created for the report, and removed again when the
    # analysis or the writing fails (a failed report leaves no empty directory behind)
    with output_dir(Path(args.out).resolve(), "--out") as out:
        numbers, files = _write_report(args.experiment, uri, out)
    print(f"report: {files.html}\n        {files.markdown}\n        {files.numbers}")
    for plot in files.plots:
        print(f"        {plot}")
    if not args.no_mlflow:  # the report is on disk by now, whatever MLflow says
        from raystilts.report.render import summary_metrics
        from raystilts.tracking.store import Tracker

        run_id = Tracker(tracking_uri=uri, experiment=args.experiment).log_summary(
            run_name=f"report {args.experiment}",
            local_dir=out,
            tags={"raystilts.report": "analysis"},
            metrics=summary_metrics(numbers),
        )
        print(f"logged to MLflow: summary run {run_id} of experiment {args.experiment!r}")
    return 0


def _write_report(experiment: str, uri: str, out: Path) -> tuple[dict[str, Any], Any]:
    """Every analysis of ``experiment`` as report files under ``out``: (numbers, files)."""
    from raystilts.report.render import write_report

    numbers = _full_analysis(experiment, uri).to_json()
    # the report's header shows them: a selection that is a coin toss among tied chains
    numbers["notes"] = [*numbers.get("notes", []), *_selection_notes(experiment, uri)]
    try:
        files = write_report(numbers, out_dir=out, experiment=experiment, source=uri)
    except OSError as e:  # a disk that filled up meanwhile
        raise UserError(f"--out {out}: writing the report failed ({e}); free space or "
                        "give another directory") from None  # fmt: skip
    return numbers, files


def cmd_import(args: argparse.Namespace) -> int:
    from raystilts.tracking.table_import import import_table

    print(import_table(args.table, experiment=args.experiment, tracking_uri=_tracking_uri(args)))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """The catalog: ``--json`` for tools, a compact table for people."""
    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "type": t.kind,
            "metric": t.metric,
            "languages": list(t.languages),
            "source": t.source,
            "target": t.is_target,
            "category": t.category,
            "has_train": t.has_train,
            "train_languages": list(t.train_languages),
            "translation_of": t.translation_of,
            "score_metrics": list(t.benchmark_metrics),
            "labels": list(t.labels),
            "description": t.description,
        }
        for t in _catalog().values()
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"{'name':14s} {'type':15s} {'metric':8s} {'role':8s} {'langs':>5s}  source / description"
    )
    for r in rows:
        role = "target" if r["target"] else "interm."
        langs = r["languages"]
        shown = ",".join(langs) if len(langs) <= 3 else f"{len(langs)}"
        print(
            f"{r['name']:14s} {r['type']:15s} {r['metric']:8s} {role:8s} {shown:>5s}  "
            f"{r['source']}: {r['description']}"
        )
    return 0


def cmd_fixtures(args: argparse.Namespace) -> int:
    """Made-up data in every real task's schema, laid out as ``--data-dir`` reads it."""
    from raystilts.tasks.fixtures import write_fixtures
    from raystilts.tasks.sources import SOURCES

    unknown = [t for t in args.task or () if t not in SOURCES]
    if unknown:
        raise UserError(
            f"fixtures: no real task {unknown[0]!r}; run 'raystilts tasks' to list tasks"
        )
    from raystilts.core.checks import writable_dir

    out = write_fixtures(writable_dir(Path(args.dir), "fixtures DIR"), tasks=args.task or None)
    print(f"wrote fixtures of {len(args.task or SOURCES)} tasks under {out}")
    return 0


def _run_options(sp: argparse.ArgumentParser) -> None:
    """Where a search runs and keeps its state (demo and search)."""
    sp.add_argument(
        "--workdir",
        default=str(DEFAULT_WORKDIR),
        help="Tune state and the default MLflow store (default: %(default)s)",
    )
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite under --workdir)")
    sp.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    sp.add_argument(
        "--storage-path",
        help="Tune/Train storage: a shared directory or s3://... (default: <workdir>/ray_results)",
    )
    sp.add_argument(
        "--cache-dir",
        help="model, data and feature cache (default: $RAYSTILTS_CACHE or ~/.cache/raystilts)",
    )
    sp.add_argument(
        "--data-dir", help="task data as <task>/<lang>/<split>.jsonl (non-embedded models)"
    )
    sp.add_argument(
        "--workers-per-trial",
        type=int,
        help="Ray Train (DDP) workers per trial; overrides resources.workers_per_trial",
    )
    sp.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per worker (implies use_gpu: true); overrides resources.gpus_per_worker",
    )


def _add_run_verbs(sub: Any) -> None:
    """demo and search: the verbs that start Ray."""
    d = sub.add_parser("demo", help="run a small real search on the embedded benchmark")
    d.add_argument(
        "--resume", action="store_true", help="continue an interrupted demo (same --workdir)"
    )
    _run_options(d)
    d.set_defaults(fn=cmd_demo)
    s = sub.add_parser("search", help="run the search of a space YAML")
    s.add_argument("space")
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted search (same space, --workdir/--storage-path, tracking "
        "URI): finished trials are kept, unfinished ones continue",
    )
    _run_options(s)
    s.set_defaults(fn=cmd_search)


def _add_analyze(sub: Any) -> None:
    a = sub.add_parser(
        "analyze",
        help="best chains, gains with intervals, orderings, translated data, XTREME scores",
    )
    a.add_argument("--experiment", required=True)
    a.add_argument("--tracking-uri")
    a.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    a.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="json: every analysis; csv: the gain table of --by (default: %(default)s)",
    )
    a.add_argument(
        "--select",
        choices=("en", "target", "both"),
        default="en",
        help="model selection shown: English dev (strict zero-shot), each language's dev, or "
        "both side by side (default: %(default)s)",
    )
    a.add_argument(
        "--by",
        choices=("none", "lang", "resource", "family", "script", "distance"),
        default="none",
        help="group the gains by language or language group (default: all languages together)",
    )
    a.add_argument(
        "--distance",
        choices=("syntactic", "genetic", "geographic"),
        default="syntactic",
        help="distance that --by distance bins (default: %(default)s)",
    )
    a.set_defaults(fn=cmd_analyze)


def _add_store_verbs(sub: Any) -> None:
    """report and import (they read or write a tracking store), tasks and fixtures."""
    r = sub.add_parser("report", help="HTML + markdown report with plots, logged to MLflow")
    r.add_argument("--experiment", required=True)
    r.add_argument("--tracking-uri")
    r.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    r.add_argument("--out", required=True, help="directory for report.html, report.md, PNGs")
    r.add_argument(
        "--no-mlflow", action="store_true", help="do not log the report as a summary run"
    )
    r.set_defaults(fn=cmd_report)
    i = sub.add_parser("import", help="a published transfer table CSV as MLflow runs")
    i.add_argument("table", help="CSV in the format of shared/data/transfer/README.md")
    i.add_argument("--experiment", required=True)
    i.add_argument("--tracking-uri")
    i.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    i.set_defaults(fn=cmd_import)
    t = sub.add_parser("tasks", help="list the task catalog")
    t.add_argument(
        "--json", action="store_true", help="a JSON list: name, type, metric, languages, source..."
    )
    t.set_defaults(fn=cmd_tasks)
    f = sub.add_parser(
        "fixtures", help="write made-up data of the real tasks as <DIR>/<task>/<lang>/<split>.jsonl"
    )
    f.add_argument("dir")
    f.add_argument("--task", action="append", help="only this task (repeatable)")
    f.set_defaults(fn=cmd_fixtures)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raystilts", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    _add_run_verbs(sub)
    v = sub.add_parser("validate", help="check a space YAML without running it")
    v.add_argument("space")
    v.set_defaults(fn=cmd_validate)
    _add_analyze(sub)
    _add_store_verbs(sub)
    return p


def _shutdown_ray() -> None:
    """Stop the local Ray (or leave the cluster) now, not in an atexit hook after our last line."""
    if "ray" in sys.modules:  # only a search started Ray; importing the search layer is then free
        from raystilts.search.driver import shutdown_ray

        shutdown_ray()


def _stopped(e: SearchInterrupted, argv: list[str]) -> str:
    """What a stopped search prints: what happened, then (last line) how to continue."""
    again = [a for a in argv if a != "--resume"]
    name = "SIGTERM" if e.signum == 15 else "Ctrl-C" if e.signum == 2 else str(e)
    if not e.tune_started:  # nothing for --resume to find; the caches keep what was prepared
        return (
            f"raystilts: stopped by {name} before any trial started\n"
            f"raystilts: start again with: raystilts {shlex.join(again)}"
        )
    return (
        f"raystilts: stopped by {name}; finished trials are kept, running ones ended KILLED "
        "(MLflow) and Ray is shut down\n"
        f"raystilts: continue with: raystilts {shlex.join([*again, '--resume'])}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.verb in ("search", "demo"):  # SIGTERM and Ctrl-C stop them cleanly
            with installed():
                return int(args.fn(args))
        return int(args.fn(args))
    except UserError as e:
        print(f"raystilts: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:  # a bug: its traceback is what we need
            raise
        print(f"raystilts: error: {environment_error(e)}", file=sys.stderr)
        return 2
    except SearchInterrupted as e:
        _shutdown_ray()
        print(_stopped(e, argv), file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("raystilts: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
