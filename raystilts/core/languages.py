"""Offline language knowledge: family, script, resource level and distance to English.

    from raystilts.core.languages import get_language, split_known
    get_language("de").family                     # 'Indo-European'
    known, unknown = split_known(["de", "xx"])    # unknown == ['xx']: report it, never drop it

The table (``raystilts/langdata/languages.csv``) covers every language of XTREME and XTREME-R
plus the embedded benchmark's synthetic languages. It is rebuilt, byte for byte, by
``python scripts/build_languages.py`` (needs ``pip install -e .[langdata]``); this module only
reads it, with the standard library.

Columns and their sources:

- ``code``: the code the benchmark uses (ISO 639-1 where one exists, else ISO 639-3).
- ``iso639_3``: ISO 639-3 individual-language code (``arb`` for Arabic, ``cmn`` for Chinese).
- ``family``, ``genus``: WALS (cldf-datasets/wals); see ``scripts/langdata_sources/README.md``.
- ``script``: ISO 15924 code of the benchmark's script (``Latn``, ``Cyrl``, ``Jpan``...).
- ``resource_level``: the class 0-5 of Joshi et al. (2020), "The State and Fate of Linguistic
  Diversity and Inclusion in the NLP World"; blank where it could not be confirmed.
- ``resource_group``: ``"high"`` for classes 4-5, ``"mid"`` for class 3, ``"low"`` for 0-2,
  blank when the class is blank.
- ``dist_syntactic``, ``dist_genetic``, ``dist_geographic``: distance to English in [0, 1]
  from URIEL+ (``urielplus`` 1.3.2, ``new_distance`` with its defaults: angular distance,
  union aggregation, original URIEL database, no imputation). English is 0 by definition.
  Blank where URIEL+ has no shared features with English (``az`` syntactic); never filled in
  by hand. URIEL's syntactic features are sparse for some languages (``kk``, ``ms``, ``qu``
  share only 12-13 with English, so ``ms`` scores 0.0 on agreement over 12 features).

Synthetic languages (``qaa``...``qae``, defined in ``raystilts.tasks.embedded``): family and
genus ``synthetic``, script ``Latn``, no resource level, and all three distances equal to the
language's built-in ``distance`` (the one knob that makes it differ from English).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = [
    "BENCHMARK_LANGUAGES",
    "DISTANCE_KINDS",
    "RESOURCE_GROUPS",
    "Language",
    "get_language",
    "load_languages",
    "resource_group",
    "split_known",
]

DISTANCE_KINDS: tuple[str, ...] = ("syntactic", "genetic", "geographic")
RESOURCE_GROUPS: tuple[str, ...] = ("high", "mid", "low")
COLUMNS: tuple[str, ...] = (
    "code",
    "iso639_3",
    "name",
    "family",
    "genus",
    "script",
    "resource_level",
    "resource_group",
    "dist_syntactic",
    "dist_genetic",
    "dist_geographic",
)

_PANX_XTREME = (
    "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko "
    "th sw yo my zh kk tr et fi hu"
)
_UDPOS_XTREME = (
    "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur "
    "vi yo zh"
)
_TATOEBA_XTREME = (
    "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw "
    "zh kk tr et fi hu"
)
_XNLI = "ar bg de el en es fr hi ru sw th tr ur vi zh"
_XQUAD = "en es de el ru tr ar vi th zh hi"
_MLQA = "en es de ar hi vi zh"
_TYDIQA = "en ar bn fi id ko ru sw te"

# Per-benchmark, per-task test languages, in the order the public sources list them.
# XTREME: google-research/xtreme evaluate.py (TASK2LANGS). XTREME-R: the same repository's
# scripts/download_data.sh (udpos, panx, xcopa), scripts/run_tatoeba.sh (tatoeba; its 'en'
# source is dropped, Tatoeba pairs xx->en) and mock_test_data/labels/mewslix; LAReQA uses
# XQuAD-R, i.e. the XQuAD languages.
BENCHMARK_LANGUAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "xtreme": {
        "xnli": tuple(_XNLI.split()),
        "pawsx": ("de", "en", "es", "fr", "ja", "ko", "zh"),
        "udpos": tuple(_UDPOS_XTREME.split()),
        "panx": tuple(_PANX_XTREME.split()),
        "xquad": tuple(_XQUAD.split()),
        "mlqa": tuple(_MLQA.split()),
        "tydiqa": tuple(_TYDIQA.split()),
        "bucc2018": ("de", "fr", "ru", "zh"),
        "tatoeba": tuple(_TATOEBA_XTREME.split()),
    },
    "xtreme_r": {
        "xnli": tuple(_XNLI.split()),
        "xcopa": ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"),
        "udpos": (*_UDPOS_XTREME.split(), "lt", "pl", "uk", "wo", "ro"),
        "panx": (*_PANX_XTREME.split(), "qu", "pl", "uk", "az", "lt", "pa", "gu", "ro"),
        # XTREME-R adds Romanian to XQuAD (evaluate.py's XTREME-R list; XQuAD's ro release)
        "xquad": (*_XQUAD.split(), "ro"),
        "mlqa": tuple(_MLQA.split()),
        "tydiqa": tuple(_TYDIQA.split()),
        "mewslix": ("ar", "de", "en", "es", "fa", "ja", "pl", "ro", "ta", "tr", "uk"),
        "lareqa": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
        "tatoeba": (*_TATOEBA_XTREME.split(), "az", "lt", "pl", "uk", "ro"),
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Language:
    """One row of the language table; ``None`` where the source has no value."""

    code: str
    iso639_3: str
    name: str
    family: str
    genus: str
    script: str
    resource_level: int | None
    resource_group: str | None
    dist_syntactic: float | None
    dist_genetic: float | None
    dist_geographic: float | None

    def distance(self, kind: str) -> float | None:
        """Distance to English of one ``kind`` in ``DISTANCE_KINDS``.

        >>> get_language("en").distance("syntactic")
        0.0
        """
        if kind == "syntactic":
            return self.dist_syntactic
        if kind == "genetic":
            return self.dist_genetic
        if kind == "geographic":
            return self.dist_geographic
        raise ValueError(f"unknown distance kind {kind!r}; use one of {', '.join(DISTANCE_KINDS)}")


def resource_group(level: int | None) -> str | None:
    """Map a Joshi et al. class to ``high`` (4-5), ``mid`` (3) or ``low`` (0-2).

    >>> [resource_group(c) for c in (5, 3, 0, None)]
    ['high', 'mid', 'low', None]
    """
    if level is None:
        return None
    if not 0 <= level <= 5:
        raise ValueError(f"resource level {level!r} is outside Joshi et al.'s classes 0-5")
    return "high" if level >= 4 else "mid" if level == 3 else "low"


def _optional_int(text: str) -> int | None:
    return int(text) if text else None


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


def parse_languages(text: str) -> dict[str, Language]:
    """Parse the table's CSV text into ``{code: Language}``, validating every row."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(
            f"language table lacks columns {missing}; rebuild it with build_languages.py"
        )
    table: dict[str, Language] = {}
    for row in reader:
        lang = Language(
            code=row["code"],
            iso639_3=row["iso639_3"],
            name=row["name"],
            family=row["family"],
            genus=row["genus"],
            script=row["script"],
            resource_level=_optional_int(row["resource_level"]),
            resource_group=row["resource_group"] or None,
            dist_syntactic=_optional_float(row["dist_syntactic"]),
            dist_genetic=_optional_float(row["dist_genetic"]),
            dist_geographic=_optional_float(row["dist_geographic"]),
        )
        if lang.code in table:
            raise ValueError(f"language table lists {lang.code!r} twice")
        if lang.resource_group != resource_group(lang.resource_level):
            raise ValueError(
                f"{lang.code!r}: resource_group {lang.resource_group!r} does not match class "
                f"{lang.resource_level!r}"
            )
        for kind in DISTANCE_KINDS:
            value = lang.distance(kind)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{lang.code!r}: {kind} distance {value!r} is outside [0, 1]")
        table[lang.code] = lang
    return table


@lru_cache(maxsize=1)
def load_languages() -> dict[str, Language]:
    """The shipped table as ``{code: Language}`` (read once, then cached)."""
    text = resources.files("raystilts").joinpath("langdata/languages.csv").read_text("utf-8")
    return parse_languages(text)


def get_language(code: str) -> Language | None:
    """The row for a benchmark language code, or ``None`` when the table lacks it."""
    return load_languages().get(code)


def split_known(codes: Iterable[str]) -> tuple[list[Language], list[str]]:
    """Split codes into known rows and unknown codes, both in input order.

    Callers report the unknown ones instead of silently dropping them.

    >>> known, unknown = split_known(["de", "xx", "ja"])
    >>> [lang.code for lang in known], unknown
    (['de', 'ja'], ['xx'])
    """
    table = load_languages()
    known: list[Language] = []
    unknown: list[str] = []
    for code in codes:
        lang = table.get(code)
        if lang is None:
            unknown.append(code)
        else:
            known.append(lang)
    return known, unknown
