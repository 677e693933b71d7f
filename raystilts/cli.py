"""The ``raystilts`` command: demo, search, validate, analyze, tasks.

    raystilts demo                                   # a small real search on the embedded benchmark
    raystilts validate search_spaces/demo.yaml
    raystilts search search_spaces/demo.yaml --workdir runs
    raystilts analyze --experiment demo --format json

User mistakes (bad YAML, unknown task, unreachable server...) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raystilts.errors import UserError

if TYPE_CHECKING:
    from raystilts.space import SearchSpace
    from raystilts.tasks import TaskSpec

__all__ = ["main"]

DEFAULT_WORKDIR = Path("raystilts_runs")


def _catalog() -> dict[str, TaskSpec]:
    from raystilts.tasks import CATALOG

    return CATALOG


def _load(path: str) -> SearchSpace:
    from raystilts.space import load_space

    return load_space(path, catalog=_catalog())


def _tracking_uri(args: argparse.Namespace) -> str:
    from raystilts.tracking import default_tracking_uri

    workdir = Path(args.workdir)
    return (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)
    )


def _search(space_path: str, args: argparse.Namespace) -> dict[str, Any]:
    space = _load(space_path)
    from raystilts.search import SearchRun, run_search
    from raystilts.workspace import default_cache_dir

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run = SearchRun(
        workdir=workdir,
        cache_dir=Path(args.cache_dir).resolve() if args.cache_dir else default_cache_dir(),
        tracking_uri=_tracking_uri(args),
        address=args.address or os.environ.get("RAY_ADDRESS"),
        storage_path=_storage(args.storage_path),
        data_dir=Path(args.data_dir) if args.data_dir else None,
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


def _analyze(experiment: str, tracking_uri: str, fmt: str) -> str:
    from raystilts.analysis import best_chains, render, runs_to_long
    from raystilts.tracking import load_runs

    runs = load_runs(tracking_uri=tracking_uri, experiment=experiment)
    return render(best_chains(runs_to_long(runs)), fmt)  # type: ignore[arg-type]


def _ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:"):
        mlflow = Path(sys.executable).parent / "mlflow"  # the one installed beside raystilts
        exe = str(mlflow) if mlflow.exists() else "mlflow"
        return f"{exe} ui --backend-store-uri {tracking_uri} --port 5000   # then open http://127.0.0.1:5000"
    return f"open {tracking_uri} in a browser"


def _summarize(summary: dict[str, Any]) -> None:
    """What a search ends with: the best chain per target and how to open the MLflow UI."""
    uri = str(summary["tracking_uri"])
    trials = ", ".join(f"{t}: {n}" for t, n in summary["trials"].items())
    print(f"\n{summary['experiment']}: trials {trials} in {summary['seconds']:.0f}s\n")
    print(_analyze(str(summary["experiment"]), uri, "table"))
    print(f"\nCompare the trials in the MLflow UI:\n  {_ui_hint(uri)}")


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
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    print(_analyze(args.experiment, _tracking_uri(args), args.format))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "type": t.kind,
            "metric": t.metric,
            "languages": list(t.languages),
            "source": t.source,
            "target": t.is_target,
            "description": t.description,
        }
        for t in _catalog().values()
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(
                f"{r['name']:12s} {r['type']:15s} {r['metric']:9s} {'target' if r['target'] else 'interm.':8s} {','.join(r['languages']):28s} {r['description']}"
            )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raystilts", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)

    def run_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--workdir",
            default=str(DEFAULT_WORKDIR),
            help="Tune state and the default MLflow store (default: %(default)s)",
        )
        sp.add_argument(
            "--tracking-uri", help="MLflow tracking URI (default: sqlite under --workdir)"
        )
        sp.add_argument(
            "--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)"
        )
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

    d = sub.add_parser("demo", help="run a small real search on the embedded benchmark")
    run_opts(d)
    d.set_defaults(fn=cmd_demo)
    s = sub.add_parser("search", help="run the search of a space YAML")
    s.add_argument("space")
    run_opts(s)
    s.set_defaults(fn=cmd_search)
    v = sub.add_parser("validate", help="check a space YAML without running it")
    v.add_argument("space")
    v.set_defaults(fn=cmd_validate)
    a = sub.add_parser("analyze", help="best chain per target from an experiment's MLflow runs")
    a.add_argument("--experiment", required=True)
    a.add_argument("--tracking-uri")
    a.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    a.add_argument("--format", choices=("table", "json", "csv"), default="table")
    a.set_defaults(fn=cmd_analyze)
    t = sub.add_parser("tasks", help="list the task catalog")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_tasks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except UserError as e:
        print(f"raystilts: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "raystilts: interrupted; finished trials are in MLflow (rerun to continue)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
