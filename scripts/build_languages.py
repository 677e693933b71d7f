"""Rebuild raystilts/langdata/languages.csv from its sources.

    pip install -e .[langdata]                       # urielplus (URIEL+ distances)
    python scripts/build_languages.py                # writes the shipped table
    python scripts/build_languages.py --check        # exit 1 if the shipped table differs
    python scripts/build_languages.py --lang2tax lang2tax.txt   # also check Joshi classes

Inputs: scripts/langdata_sources/languages_input.csv (curated rows, sources per row; see the
README there), raystilts.tasks.embedded.LANGUAGES (synthetic languages) and the URIEL+
database bundled with the urielplus package (distances to English). Deterministic: the same
inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import io
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from raystilts.core.languages import COLUMNS, DISTANCE_KINDS, resource_group
from raystilts.tasks.embedded import LANGUAGES as SYNTHETIC

ROOT = Path(__file__).resolve().parent.parent
INPUT = ROOT / "scripts" / "langdata_sources" / "languages_input.csv"
OUTPUT = ROOT / "raystilts" / "langdata" / "languages.csv"
URIELPLUS_VERSION = "1.3.2"  # the distances were checked with this release
ENGLISH = "eng"

DistanceFn = Callable[[str, str], "float | None"]


def uriel_distance() -> DistanceFn:
    """A ``(kind, iso639_3) -> distance to English`` function backed by URIEL+."""
    from importlib.metadata import version

    found = version("urielplus")
    if found != URIELPLUS_VERSION:
        raise SystemExit(
            f"urielplus {found} is installed; the table is built with {URIELPLUS_VERSION} "
            f"(pip install urielplus=={URIELPLUS_VERSION})"
        )
    logging.disable(logging.INFO)  # URIEL+ logs every distance at INFO
    from urielplus import urielplus

    uriel = urielplus.URIELPlus()
    _check_pristine_database(Path(urielplus.__file__).parent / "database")

    def distance(kind: str, code: str) -> float | None:
        if code == ENGLISH:  # 0 by definition; URIEL+ gives 0.0002 (arccos rounding)
            return 0.0
        try:
            return float(uriel.new_distance(kind, ENGLISH, code))
        except ValueError:  # unknown language or no shared features: leave it blank
            return None

    return distance


def _check_pristine_database(database: Path) -> None:
    # URIEL+ edits its working copies in place (integrate/impute); only the shipped
    # original URIEL files give reproducible distances.
    for name in ("family_features.npz", "features.npz", "geocoord_features.npz"):
        if not filecmp.cmp(database / name, database / "original_uriel" / name, shallow=False):
            raise SystemExit(
                f"{database / name} differs from original_uriel/{name}: reinstall urielplus "
                "or copy the original file back"
            )


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def build_rows(distance: DistanceFn, input_path: Path = INPUT) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    with input_path.open(encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            level = int(rec["joshi_class"]) if rec["joshi_class"] else None
            row = {
                "code": rec["code"],
                "iso639_3": rec["iso639_3"],
                "name": rec["name"],
                "family": rec["family"],
                "genus": rec["genus"],
                "script": rec["script"],
                "resource_level": "" if level is None else str(level),
                "resource_group": resource_group(level) or "",
            }
            for kind in DISTANCE_KINDS:
                row[f"dist_{kind}"] = _fmt(distance(kind, rec["iso639_3"]))
            rows.append(row)
    real = {row["code"] for row in rows}
    for synth in SYNTHETIC:
        if synth.code in real:  # 'en' is real English, not a synthetic row
            continue
        rows.append(
            {
                "code": synth.code,
                "iso639_3": synth.code,
                "name": synth.name,
                "family": "synthetic",
                "genus": "synthetic",
                "script": "Latn",
                "resource_level": "",
                "resource_group": "",
                **{f"dist_{kind}": _fmt(synth.distance) for kind in DISTANCE_KINDS},
            }
        )
    return sorted(rows, key=lambda row: row["code"])


def render(rows: Sequence[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def check_lang2tax(path: Path, input_path: Path = INPUT) -> list[str]:
    """Compare the curated classes with Joshi et al.'s lang2tax.txt (``name,class`` lines)."""
    classes: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "," in line:
            name, cls = line.rsplit(",", 1)
            classes[name.strip().lower()] = cls.strip()
    problems = []
    with input_path.open(encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            found = classes.get(rec["name"].lower())
            if found is not None and rec["joshi_class"] and found != rec["joshi_class"]:
                problems.append(f"{rec['code']}: input {rec['joshi_class']}, lang2tax {found}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--lang2tax", type=Path, help="Joshi et al.'s lang2tax.txt to check")
    args = parser.parse_args(argv)
    if args.lang2tax:
        problems = check_lang2tax(args.lang2tax)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
    text = render(build_rows(uriel_distance()))
    if args.check:
        same = OUTPUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUTPUT} differs from a fresh build")
        return 0 if same else 1
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({text.count(chr(10)) - 1} languages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
