"""The shipped language table: coverage of the benchmarks, hand-checked rows, reproducibility."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from raystilts.core.languages import (
    BENCHMARK_LANGUAGES,
    DISTANCE_KINDS,
    Language,
    get_language,
    load_languages,
    parse_languages,
    resource_group,
    split_known,
)
from raystilts.tasks.embedded import LANGUAGES as SYNTHETIC

ROOT = Path(__file__).resolve().parent.parent

# |Lang| per task as published (XTREME paper Table 1; XTREME-R from the repository's scripts).
EXPECTED_SIZES = {
    "xtreme": {
        "xnli": 15,
        "pawsx": 7,
        "udpos": 33,
        "panx": 40,
        "xquad": 11,
        "mlqa": 7,
        "tydiqa": 9,
        "bucc2018": 4,
        "tatoeba": 36,
    },
    "xtreme_r": {
        "xnli": 15,
        "xcopa": 11,
        "udpos": 38,
        "panx": 48,
        "xquad": 12,  # XTREME-R adds ro
        "mlqa": 7,
        "tydiqa": 9,
        "mewslix": 11,
        "lareqa": 11,
        "tatoeba": 41,
    },
}


def test_task_lists_have_the_published_sizes_and_no_duplicates() -> None:
    sizes = {
        b: {t: len(langs) for t, langs in tasks.items()} for b, tasks in BENCHMARK_LANGUAGES.items()
    }
    assert sizes == EXPECTED_SIZES
    for tasks in BENCHMARK_LANGUAGES.values():
        for task, langs in tasks.items():
            assert len(set(langs)) == len(langs), task
            assert task == task.lower()


def test_benchmark_language_counts() -> None:
    xtreme = {c for langs in BENCHMARK_LANGUAGES["xtreme"].values() for c in langs}
    xtreme_r = {c for langs in BENCHMARK_LANGUAGES["xtreme_r"].values() for c in langs}
    assert len(xtreme) == 40
    assert len(xtreme_r) == 50
    assert xtreme < xtreme_r


def test_every_benchmark_language_is_in_the_table() -> None:
    codes = [c for tasks in BENCHMARK_LANGUAGES.values() for langs in tasks.values() for c in langs]
    _, unknown = split_known(codes)
    assert unknown == []


def test_embedded_languages_use_their_built_in_distance() -> None:
    for synth in SYNTHETIC:
        lang = get_language(synth.code)
        assert lang is not None, synth.code
        if synth.code == "en":
            continue
        assert lang.family == "synthetic"
        assert lang.script == "Latn"
        assert lang.resource_level is None and lang.resource_group is None
        for kind in DISTANCE_KINDS:
            assert lang.distance(kind) == pytest.approx(synth.distance)


def test_hand_checked_rows() -> None:
    de = get_language("de")
    assert de is not None
    assert (de.family, de.genus, de.script, de.resource_level, de.resource_group) == (
        "Indo-European",
        "Germanic",
        "Latn",
        5,
        "high",
    )
    sw = get_language("sw")
    assert sw is not None and (sw.iso639_3, sw.resource_level, sw.resource_group) == (
        "swh",
        2,
        "low",
    )
    ja = get_language("ja")
    assert ja is not None and ja.script == "Jpan"
    assert get_language("ko").script == "Kore"  # type: ignore[union-attr]
    assert get_language("ka").script == "Geor"  # type: ignore[union-attr]
    zh = get_language("zh")
    assert zh is not None and (zh.iso639_3, zh.family, zh.script) == ("cmn", "Sino-Tibetan", "Hani")
    en = get_language("en")
    assert en is not None
    assert [en.distance(k) for k in DISTANCE_KINDS] == [0.0, 0.0, 0.0]
    assert get_language("th").resource_group == "mid"  # type: ignore[union-attr]


def test_distances_are_in_unit_interval_and_order_sensibly() -> None:
    table = load_languages()
    for lang in table.values():
        for kind in DISTANCE_KINDS:
            value = lang.distance(kind)
            assert value is None or 0.0 <= value <= 1.0
    # German is closer to English than Japanese on every axis.
    de, ja = table["de"], table["ja"]
    for kind in DISTANCE_KINDS:
        assert de.distance(kind) < ja.distance(kind)  # type: ignore[operator]


def test_resource_group_mapping() -> None:
    assert [resource_group(c) for c in range(6)] == ["low", "low", "low", "mid", "high", "high"]
    assert resource_group(None) is None
    with pytest.raises(ValueError, match="6"):
        resource_group(6)


def test_split_known_keeps_input_order_and_reports_unknowns() -> None:
    known, unknown = split_known(["zh", "xx", "de", "qaa", "yy"])
    assert [lang.code for lang in known] == ["zh", "de", "qaa"]
    assert unknown == ["xx", "yy"]
    assert all(isinstance(lang, Language) for lang in known)
    assert get_language("xx") is None


def test_distance_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'phonological'"):
        get_language("de").distance("phonological")  # type: ignore[union-attr]


def test_parser_rejects_bad_rows() -> None:
    header = (
        "code,iso639_3,name,family,genus,script,resource_level,resource_group,"
        "dist_syntactic,dist_genetic,dist_geographic\n"
    )
    with pytest.raises(ValueError, match="outside"):
        parse_languages(header + "xx,xxx,X,F,G,Latn,3,mid,1.5,,\n")
    with pytest.raises(ValueError, match="does not match"):
        parse_languages(header + "xx,xxx,X,F,G,Latn,3,high,,,\n")
    with pytest.raises(ValueError, match="twice"):
        parse_languages(header + "xx,xxx,X,F,G,Latn,,,,,\n" * 2)
    with pytest.raises(ValueError, match="lacks columns"):
        parse_languages("code,name\nxx,X\n")


@pytest.mark.skipif(
    importlib.util.find_spec("urielplus") is None,
    reason="urielplus not installed (pip install -e .[langdata]); cannot rebuild the table",
)
def test_build_script_reproduces_the_shipped_table() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_languages
    finally:
        sys.path.pop(0)
    text = build_languages.render(build_languages.build_rows(build_languages.uriel_distance()))
    shipped = (ROOT / "raystilts" / "langdata" / "languages.csv").read_text(encoding="utf-8")
    assert text == shipped
