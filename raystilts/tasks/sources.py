"""Where every real task's data lives, and how its rows become canonical examples.

    from raystilts.tasks.sources import SOURCES, read
    SOURCES["xnli"].source_for("train", "de")   # MNLI on the hub: XNLI trains on English MNLI
    read(task, "dev", "de", data_dir=None)        # the hub (or its cache); one-line error if not

One declarative table, ``SOURCES``, says for each task and split which Hugging Face dataset
(id, config, split) or URL holds the rows, how benchmark language codes map to the hub's
('zh' -> 'cmn' for Tatoeba, 'de' -> 'German' for UDPOS), and which schema the rows have.
Small adapters per schema turn rows into the canonical examples of raystilts.tasks.catalog.

Loading order for (task, split, lang):

1. ``<data_dir>/<task>/<lang>/<split>.jsonl``: rows in the source's REAL schema (the same field
   names as on the hub; ``raystilts fixtures DIR`` writes made-up examples of each);
2. the hub or the URL through ``datasets.load_dataset`` (uses the local HF cache; offline with
   ``HF_HUB_OFFLINE=1``);
3. otherwise one ``UserError`` line naming the task, the source tried and the file to provide.

Parquet-backed hub datasets only (``datasets`` 5 runs no loading scripts). Sources published
only as files use ``datasets``' generic ``json`` builder on their URL (XTREME's translate-train
SQuAD files, LAReQA's XQuAD-R). CCGbank (licensed) and Mewsli-X (built by a script from
WikiNews dumps) are local files only.

``hub_mirror`` (tests, air-gapped clusters): a directory laid out like the hub,
``<mirror>/<dataset id>/`` with a README whose ``configs`` list the parquet files, and
``<mirror>/urls/<file name>`` for URL sources. ``raystilts.tasks.fixtures.write_hub_mirror`` writes
one, so tests run the very code that loads the hub.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raystilts.core.errors import UserError
from raystilts.core.languages import BENCHMARK_LANGUAGES

if TYPE_CHECKING:
    from raystilts.tasks.catalog import TaskSpec

__all__ = [
    "LOCAL_ONLY",
    "READERS",
    "SCHEMAS",
    "SOURCES",
    "Source",
    "TaskSources",
    "local_path",
    "read",
    "read_rows",
]

SPLITS = ("train", "dev", "test")

# --------------------------------------------------------------------------- label sets

NLI_LABELS = ("entailment", "neutral", "contradiction")  # GLUE MNLI, SNLI, ANLI, XNLI ids 0-2
# UDPOS as google/xtreme encodes ``pos_tags`` (ClassLabel ids 0-16)
UPOS_TAGS = (
    *("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM"),
    *("PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"),
)
# PAN-X / WikiANN ``ner_tags`` (google/xtreme and unimelb-nlp/wikiann, ids 0-6)
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

# --------------------------------------------------------------------------- language codes

# google/xtreme names UDPOS configs by English language name
_UD_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "kk": "Kazakh", "ko": "Korean",
    "mr": "Marathi", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "ta": "Tamil",
    "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
}  # fmt: skip
# google/xtreme names Tatoeba configs by the LASER corpus's ISO 639-3 codes
_TATOEBA_CODES = {
    "af": "afr", "ar": "ara", "bn": "ben", "bg": "bul", "de": "deu", "zh": "cmn", "el": "ell",
    "et": "est", "eu": "eus", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun",
    "id": "ind", "it": "ita", "jv": "jav", "ja": "jpn", "ka": "kat", "kk": "kaz", "ko": "kor",
    "ml": "mal", "mr": "mar", "nl": "nld", "fa": "pes", "pt": "por", "ru": "rus", "es": "spa",
    "sw": "swh", "ta": "tam", "tl": "tgl", "th": "tha", "tr": "tur", "ur": "urd", "vi": "vie",
    "az": "aze", "lt": "lit", "pl": "pol", "uk": "ukr", "ro": "ron", "te": "tel",
}  # fmt: skip
# TyDiQA-GoldP ids start with the language's English name ("arabic-2387...-1")
_TYDI_NAMES = {
    "en": "english", "ar": "arabic", "bn": "bengali", "fi": "finnish", "id": "indonesian",
    "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu",
}  # fmt: skip


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """One (split, language) of a task on the hub or at a URL.

    ``config``, ``url`` and ``keep_value`` may contain ``{code}`` (the hub's language code,
    from ``TaskSources.codes``) or ``{name}`` (the language's name from ``TaskSources.names``).
    ``builder`` is set for URL sources (``json``); then ``dataset`` is unused.
    """

    dataset: str = ""
    config: str | None = None
    split: str = "train"  # hub split, slicing allowed ("train[:500]")
    schema: str  # key of SCHEMAS (the adapter, and the fixtures' row shape)
    url: str | None = None  # with builder: a file URL template
    builder: str | None = None  # "json" for URL sources
    field: str | None = None  # json builder: the top-level list holding the rows
    data_files: str | None = None  # hub dataset: only these files (big dumps: one shard)
    keep: str | None = None  # name in KEEP: a row filter (a shared config holding all languages)
    # datasets whose main branch still holds a loading script (datasets 5 runs none): read the
    # hub's own parquet conversion, branch refs/convert/parquet, folder <data_dir>/<split>/
    revision: str | None = None
    data_dir: str | None = None

    def describe(self, code: str = "{code}", name: str = "{name}") -> str:
        if self.url:
            return self.url.format(code=code, name=name)
        config = f"/{self.config.format(code=code, name=name)}" if self.config else ""
        files = f" ({self.data_files.format(code=code, name=name)})" if self.data_files else ""
        return f"{self.dataset}{config}:{self.split}{files}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSources:
    """Sources of one task: the benchmark's splits, English overrides, and language codes."""

    splits: Mapping[str, Source]  # canonical split -> source (every language)
    english: Mapping[str, Source] = field(default_factory=dict)  # overrides for "en"
    codes: Mapping[str, str] = field(default_factory=dict)  # ISO -> hub code (default: ISO)
    names: Mapping[str, str] = field(default_factory=dict)  # ISO -> name used in filters/configs
    # languages that have no split of their own: "dev" falls back to this split (documented)
    no_dev: tuple[str, ...] = ()
    local_only: str | None = None  # why the hub cannot serve it; the files users must provide
    note: str = ""
    # What a task needs beyond one source per split, declared here so that no module tests a
    # task's name (not part of the repr: the hub data's fingerprint is the sources' repr):
    # files in <data-dir>/<task>/ besides the per-language splits: name -> what it holds
    # ("labels": the label names, one a line; "candidates": a retrieval candidate set)
    task_files: Mapping[str, str] = field(default_factory=dict, repr=False)
    # one language's evaluation set reads every language's files (LAReQA's candidates)
    every_language: bool = field(default=False, repr=False)
    # more sources concatenated to a split's rows (ANLI+'s train: MNLI and SNLI)
    extra: Mapping[str, tuple[Source, ...]] = field(default_factory=dict, repr=False)

    def task_file(self, holds: str) -> str | None:
        """The name of the task file that holds ``holds`` ("labels", "candidates"), if any."""
        return next((name for name, what in self.task_files.items() if what == holds), None)

    def source_for(self, split: str, lang: str) -> Source:
        if lang == "en" and split in self.english:
            return self.english[split]
        if split == "dev" and lang in self.no_dev:
            return self.splits["test"]
        return self.splits[split]

    def code(self, lang: str) -> str:
        return self.codes.get(lang, lang)

    def summary(self) -> str:
        if self.local_only:
            return f"local files ({self.local_only.split(';')[0]})"
        seen: list[str] = []
        for src in (*self.english.values(), *self.splits.values()):
            text = src.url.rsplit("/", 1)[0] if src.url else src.dataset
            if text not in seen:
                seen.append(text)
        return ", ".join(seen)


def _hub(dataset: str, config: str | None, split: str, schema: str, **kw: Any) -> Source:
    return Source(dataset=dataset, config=config, split=split, schema=schema, **kw)


def _same(
    dataset: str, config: str | None, split: str, schema: str, **kw: Any
) -> dict[str, Source]:
    """dev and test from one hub split (the benchmark has one evaluation set)."""
    src = _hub(dataset, config, split, schema, **kw)
    return {"dev": src, "test": src}


_GLUE = "nyu-mll/glue"
_XTREME = "google/xtreme"
_SQUAD_TRAIN = _hub("rajpurkar/squad", None, "train", "squad")
_SQUAD_DEV = _hub("rajpurkar/squad", None, "validation", "squad")
_MNLI = {
    "train": _hub(_GLUE, "mnli", "train", "nli"),
    "dev": _hub(_GLUE, "mnli", "validation_matched", "nli"),
    # GLUE's MNLI test labels are hidden: the mismatched dev set stands in for test
    "test": _hub(_GLUE, "mnli", "validation_mismatched", "nli"),
}
_XTREME_TT = "https://storage.googleapis.com/xtreme_translations"
_CONVERTED = {"revision": "refs/convert/parquet", "data_dir": "default"}
# Wikipedia dumps as parquet; one shard per language keeps the download small
_WIKI = "wikimedia/wikipedia"
_WIKI_FILES = "20231101.{code}/train-00000-of-*.parquet"

# ANLI+ concatenates these to ANLI's train split (Phang et al. 2020, as in Nie et al. 2020)
ANLI_EXTRA: tuple[Source, ...] = (
    _MNLI["train"],
    _hub("stanfordnlp/snli", None, "train", "nli"),
)

SOURCES: dict[str, TaskSources] = {
    # ---- English intermediate tasks -------------------------------------------------------
    "anli": TaskSources(
        # ANLI+ of Phang et al.: ANLI R1-R3 + MNLI + SNLI in one NLI task (one head)
        splits={
            "train": _hub("facebook/anli", None, "train_r1+train_r2+train_r3", "nli"),
            "dev": _hub("facebook/anli", None, "dev_r1+dev_r2+dev_r3", "nli"),
            "test": _hub("facebook/anli", None, "test_r1+test_r2+test_r3", "nli"),
        },
        note="train also concatenates nyu-mll/glue mnli and stanfordnlp/snli train (see ANLI_EXTRA)",
        extra={"train": ANLI_EXTRA},
    ),
    "mnli": TaskSources(splits=_MNLI),
    "qqp": TaskSources(
        splits={
            "train": _hub(_GLUE, "qqp", "train", "qqp"),
            # GLUE QQP test labels are hidden (-1): dev doubles as test
            **_same(_GLUE, "qqp", "validation", "qqp"),
        }
    ),
    "squad_v1": TaskSources(
        splits={"train": _SQUAD_TRAIN, **_same("rajpurkar/squad", None, "validation", "squad")}
    ),
    "squad_v2": TaskSources(
        splits={
            "train": _hub("rajpurkar/squad_v2", None, "train", "squad"),
            **_same("rajpurkar/squad_v2", None, "validation", "squad"),
        }
    ),
    "hellaswag": TaskSources(
        splits={
            "train": _hub("Rowan/hellaswag", None, "train", "hellaswag", **_CONVERTED),
            # test labels are hidden: dev doubles as test
            **_same("Rowan/hellaswag", None, "validation", "hellaswag", **_CONVERTED),
        }
    ),
    "cosmosqa": TaskSources(
        splits={
            "train": _hub("allenai/cosmos_qa", None, "train", "cosmosqa", **_CONVERTED),
            **_same("allenai/cosmos_qa", None, "validation", "cosmosqa", **_CONVERTED),
        }
    ),
    "commonsenseqa": TaskSources(
        splits={
            "train": _hub("tau/commonsense_qa", None, "train", "commonsenseqa"),
            **_same("tau/commonsense_qa", None, "validation", "commonsenseqa"),
        }
    ),
    "ccg": TaskSources(
        splits={s: Source(schema="ccg") for s in SPLITS},
        local_only=(
            "CCGbank is licensed (LDC2005T13); convert it to <data-dir>/ccg/en/{train,dev,test}"
            '.jsonl rows {"tokens": [...], "tags": [supertag, ...]} and list the supertags, '
            "one a line, in <data-dir>/ccg/tags.txt"
        ),
        task_files={"tags.txt": "labels"},
    ),
    # ---- XTREME targets -------------------------------------------------------------------
    "xnli": TaskSources(
        splits={
            "train": _hub("facebook/xnli", "{code}", "train", "nli"),
            "dev": _hub("facebook/xnli", "{code}", "validation", "nli"),
            "test": _hub("facebook/xnli", "{code}", "test", "nli"),
        },
        english={"train": _MNLI["train"]},  # XTREME: XNLI trains on English MNLI
    ),
    "pawsx": TaskSources(
        splits={
            s: _hub("google-research-datasets/paws-x", "{code}", hub, "pawsx")
            for s, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))
        }
    ),
    "udpos": TaskSources(
        splits={
            s: _hub(_XTREME, "udpos.{name}", hub, "udpos")
            for s, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))
        },
        names=_UD_NAMES,
        no_dev=("kk", "th", "tl", "yo"),  # UD 2.5 has test sets only for these
    ),
    "panx": TaskSources(
        splits={
            s: _hub(_XTREME, "PAN-X.{code}", hub, "panx")
            for s, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))
        }
    ),
    "xquad": TaskSources(
        splits=_same(_XTREME, "XQuAD.{code}", "validation", "squad"),  # XQuAD is one test set
        english={"train": _SQUAD_TRAIN, "dev": _SQUAD_DEV},  # XTREME: trains on SQuAD v1.1
    ),
    "mlqa": TaskSources(
        splits={
            "dev": _hub(_XTREME, "MLQA.{code}.{code}", "validation", "squad"),
            "test": _hub(_XTREME, "MLQA.{code}.{code}", "test", "squad"),
        },
        english={"train": _SQUAD_TRAIN},
    ),
    "tydiqa": TaskSources(
        # GoldP: all languages in one config, told apart by the id prefix; XTREME trains on the
        # English part of train and tests on the GoldP dev set (no separate dev: dev = test)
        splits={
            "train": _hub(_XTREME, "tydiqa", "train", "squad", keep="id_prefix"),
            **_same(_XTREME, "tydiqa", "validation", "squad", keep="id_prefix"),
        },
        names=_TYDI_NAMES,
    ),
    "bucc": TaskSources(
        # google/xtreme keeps BUCC's gold pairs only (no distractor sentences); full BUCC files
        # can be given as local rows in the same schema plus unpaired sentences (see bitext)
        splits={
            "dev": _hub(_XTREME, "bucc18.{code}", "validation", "bitext"),
            "test": _hub(_XTREME, "bucc18.{code}", "test", "bitext"),
        }
    ),
    "tatoeba": TaskSources(
        splits=_same(_XTREME, "tatoeba.{code}", "validation", "bitext"),  # one set per language
        codes=_TATOEBA_CODES,
    ),
    # ---- XTREME-R -------------------------------------------------------------------------
    "xcopa": TaskSources(
        splits={
            "dev": _hub("cambridgeltl/xcopa", "{code}", "validation", "copa"),
            "test": _hub("cambridgeltl/xcopa", "{code}", "test", "copa"),
        },
        # XTREME-R's English training data is COPA (SuperGLUE); it has no English test labels
        english={
            "train": _hub("aps/super_glue", "copa", "train", "copa"),
            **_same("aps/super_glue", "copa", "validation", "copa"),
        },
    ),
    "udpos_r": TaskSources(
        # XTREME-R's UD 2.7 POS data (its 38 languages), as mirrored on the hub
        splits={
            s: _hub("izhx/xtreme-r-udpos", "{code}", hub, "udpos")
            for s, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))
        },
        no_dev=tuple(x for x in BENCHMARK_LANGUAGES["xtreme_r"]["udpos"] if x != "en"),
        # (the mirror has test sets only outside English)
    ),
    "panx_r": TaskSources(
        # WikiANN with Rahimi et al.'s splits: every XTREME-R language (XTREME's 40 + 8)
        splits={
            s: _hub("unimelb-nlp/wikiann", "{code}", hub, "panx")
            for s, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))
        }
    ),
    "xquad_r": TaskSources(
        # google/xtreme's XQuAD configs stop at XTREME's 11 languages; XQuAD's own dataset has
        # every XTREME-R language, Romanian included
        splits=_same("google/xquad", "xquad.{code}", "validation", "squad"),
        english={"train": _SQUAD_TRAIN, "dev": _SQUAD_DEV},
    ),
    "tatoeba_r": TaskSources(
        splits=_same("mteb/tatoeba-bitext-mining", "{code}-eng", "test", "mteb_bitext"),
        codes=_TATOEBA_CODES,
    ),
    "mewslix": TaskSources(
        splits={s: Source(schema="mewslix") for s in ("dev", "test")},
        local_only=(
            "Mewsli-X is built from WikiNews dumps by google-research's get-mewsli-x.sh; put its "
            "wikinews_mentions-{dev,test}.jsonl rows of each language in "
            "<data-dir>/mewslix/<lang>/{dev,test}.jsonl and candidate_set_entities.jsonl in "
            "<data-dir>/mewslix/"
        ),
        task_files={"candidate_set_entities.jsonl": "candidates"},
    ),
    "lareqa": TaskSources(
        # XQuAD-R (SQuAD-format JSON per language, paragraphs split into sentences) from
        # google-research-datasets/lareqa; its own schema: a question retrieves sentences
        splits=_same(
            "",
            None,
            "train",
            "xquad_r",
            builder="json",
            field="data",
            url="https://github.com/google-research-datasets/lareqa/raw/master/xquad-r/{code}.json",
        ),
        every_language=True,
    ),
    # ---- variants: machine-translated training data and multilingual MLM ------------------
    "xnli_tt": TaskSources(
        # XNLI-MT 1.0: MNLI train machine-translated into the 14 XNLI languages (facebook/xnli)
        splits={
            "train": _hub("facebook/xnli", "{code}", "train", "nli"),
            "dev": _hub("facebook/xnli", "{code}", "validation", "nli"),
            "test": _hub("facebook/xnli", "{code}", "test", "nli"),
        },
        english=_MNLI,
    ),
    "pawsx_tt": TaskSources(
        # PAWS-X's own machine-translated training sets (the English one is PAWS)
        splits={
            s: _hub("google-research-datasets/paws-x", "{code}", hub, "pawsx")
            for s, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))
        }
    ),
    "squad_tt": TaskSources(
        # XTREME's translate-train SQuAD v1.1 (Google MT), the translate-train data of XQuAD/MLQA
        splits={
            "train": Source(
                builder="json",
                field="data",
                schema="squad_json",
                url=f"{_XTREME_TT}/SQuAD/translate-train/squad.translate.train.en-{{code}}.json",
            ),
            **_same(_XTREME, "XQuAD.{code}", "validation", "squad"),
        },
        english={"train": _SQUAD_TRAIN, "dev": _SQUAD_DEV, "test": _SQUAD_DEV},
    ),
    "tydiqa_tt": TaskSources(
        splits={
            "train": Source(
                builder="json",
                field="data",
                schema="squad_json",
                url=(
                    f"{_XTREME_TT}/TyDiQA-GoldP/translate-train/"
                    "tydiqa.translate.train.en-{code}.json"
                ),
            ),
            **_same(_XTREME, "tydiqa", "validation", "squad", keep="id_prefix"),
        },
        english={"train": _hub(_XTREME, "tydiqa", "train", "squad", keep="id_prefix")},
        names=_TYDI_NAMES,
    ),
    "wiki_mlm": TaskSources(
        splits={
            "train": _hub(_WIKI, None, "train[200:]", "wiki", data_files=_WIKI_FILES),
            **_same(_WIKI, None, "train[:200]", "wiki", data_files=_WIKI_FILES),
        },
        note="the first parquet shard of each language's 20231101 dump; 200 articles held out",
    ),
}

LOCAL_ONLY = tuple(name for name, s in SOURCES.items() if s.local_only)


# --------------------------------------------------------------------------- row filters


def _keep_id_prefix(row: Mapping[str, Any], name: str) -> bool:
    return str(row["id"]).startswith(f"{name}-")


KEEP: dict[str, Callable[[Mapping[str, Any], str], bool]] = {"id_prefix": _keep_id_prefix}


# --------------------------------------------------------------------------- adapters


def _nli(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    # SNLI (and GLUE test splits) mark examples without a gold label with -1: dropped
    return [
        {"text": [r["premise"], r["hypothesis"]], "label": int(r["label"])}
        for r in rows
        if int(r["label"]) >= 0
    ]


def _qqp(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [
        {"text": [r["question1"], r["question2"]], "label": int(r["label"])}
        for r in rows
        if int(r["label"]) >= 0
    ]


def _pawsx(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [
        {"text": [r["sentence1"], r["sentence2"]], "label": int(r["label"])}
        for r in rows
        if str(r["label"]).strip() in ("0", "1")  # a few translated rows lack a label
    ]


def _squad(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [
        {
            "id": str(r["id"]),
            "context": r["context"],
            "question": r["question"],
            "answers": {
                "text": list(r["answers"]["text"]),
                "answer_start": [int(s) for s in r["answers"]["answer_start"]],
            },
        }
        for r in rows
    ]


def _squad_json(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    """SQuAD's nested file format (``data`` -> paragraphs -> qas) flattened."""
    out = []
    for article in rows:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                out.append(
                    {
                        "id": str(qa["id"]),
                        "context": para["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    }
                )
    return out


def _hellaswag(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    # label is a string ("0".."3"); the hidden test split has ""
    return [
        {"context": r["ctx"], "choices": list(r["endings"]), "label": int(r["label"])}
        for r in rows
        if str(r["label"]).strip()
    ]


def _cosmosqa(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [
        {
            "context": f"{r['context']} {r['question']}",
            "choices": [r[f"answer{i}"] for i in range(4)],
            "label": int(r["label"]),
        }
        for r in rows
        if int(r["label"]) >= 0
    ]


def _commonsenseqa(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [
        {
            "context": r["question"],
            "choices": list(r["choices"]["text"]),
            "label": list(r["choices"]["label"]).index(r["answerKey"]),
        }
        for r in rows
        if r["answerKey"]  # the test split has no answer key
    ]


_CONNECTOR = {"cause": "because", "effect": "so"}


def _copa(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [
        {
            "context": f"{r['premise']} {_CONNECTOR[r['question']]}",
            "choices": [r["choice1"], r["choice2"]],
            "label": int(r["label"]),
        }
        for r in rows
        if int(r["label"]) >= 0
    ]


def _tag_ids(
    column: str,
) -> Callable[[Sequence[Mapping[str, Any]], TaskSpec], list[dict[str, Any]]]:
    def adapt(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
        # hub tags are ClassLabel ids into the task's labels; local files may carry names
        def name(t: Any) -> str:
            return task.labels[t] if isinstance(t, int) else str(t)

        return [
            {"tokens": list(r["tokens"]), "tags": [name(t) for t in r[column]]}
            for r in rows
            if r["tokens"]
        ]

    return adapt


def _bitext(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    """Parallel pairs: the non-English side queries, the English side is the candidate pool.

    google/xtreme's bucc18 configs hold BUCC's gold pairs only (its script drops the unpaired
    sentences, and puts the sentence ids in source_lang/target_lang), so BUCC from the hub is
    retrieval among translations; the full task needs local rows with the unpaired sentences.

    A row with an empty ``source_sentence`` adds an unpaired candidate (BUCC's distractors); an
    empty ``target_sentence`` a query without translation (gold ``[]``)."""
    queries: list[dict[str, Any]] = []
    cands: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        # google/xtreme's Tatoeba rows keep the files' trailing newlines
        src = (r.get("source_sentence") or "").strip()
        tgt = (r.get("target_sentence") or "").strip()
        if tgt:
            cands.append({"role": "candidate", "id": f"c{i}", "text": tgt, "gold": []})
        if src:
            gold = [f"c{i}"] if tgt else []
            queries.append({"role": "query", "id": f"q{i}", "text": src, "gold": gold})
    return queries + cands


def _mteb_bitext(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    # mteb/tatoeba-bitext-mining: sentence1 in the language, sentence2 its English translation
    return _bitext(
        [{"source_sentence": r["sentence1"], "target_sentence": r["sentence2"]} for r in rows],
        task,
    )


def _wiki(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> list[dict[str, Any]]:
    return [{"text": r["text"]} for r in rows if r["text"].strip()]


Adapter = Callable[[Sequence[Mapping[str, Any]], "TaskSpec"], list[dict[str, Any]]]
SCHEMAS: dict[str, Adapter] = {
    "nli": _nli,
    "qqp": _qqp,
    "pawsx": _pawsx,
    "squad": _squad,
    "squad_json": _squad_json,
    "hellaswag": _hellaswag,
    "cosmosqa": _cosmosqa,
    "commonsenseqa": _commonsenseqa,
    "copa": _copa,
    "udpos": _tag_ids("pos_tags"),
    "panx": _tag_ids("ner_tags"),
    "ccg": _tag_ids("tags"),
    "bitext": _bitext,
    "mteb_bitext": _mteb_bitext,
    "wiki": _wiki,
    # mewslix and xquad_r read several files: READERS
}

# the fields a local file's rows need, per schema (error messages; fixtures write them all)
SCHEMA_FIELDS: dict[str, str] = {
    "nli": "premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction)",
    "qqp": "question1, question2, label (0/1)",
    "pawsx": "sentence1, sentence2, label (0/1)",
    "squad": "id, context, question, answers {text: [...], answer_start: [...]}",
    "squad_json": "title, paragraphs [{context, qas [{id, question, answers [{text, answer_start}]}]}]",
    "xquad_r": "title, paragraphs [{context, sentences, sentence_breaks, qas [{id, question, answers}]}]",
    "hellaswag": "ctx, endings [4], label ('0'..'3')",
    "cosmosqa": "context, question, answer0..answer3, label",
    "commonsenseqa": "question, choices {label, text}, answerKey",
    "copa": "premise, choice1, choice2, question (cause/effect), label",
    "udpos": "tokens, pos_tags (ids of the 17 UPOS tags)",
    "panx": "tokens, ner_tags (ids of O B-PER I-PER B-ORG I-ORG B-LOC I-LOC)",
    "ccg": "tokens, tags",
    "bitext": "source_sentence, target_sentence",
    "mteb_bitext": "sentence1, sentence2",
    "wiki": "text",
    "mewslix": "context {text, language}, mentions [{example_id, entity_id, mention_span}]",
}


# --------------------------------------------------------------------------- loading


def local_path(data_dir: Path, task: str, lang: str, split: str) -> Path:
    return data_dir / task / lang / f"{split}.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_rows(
    task: str,
    split: str,
    lang: str,
    *,
    data_dir: Path | None,
    hub_mirror: Path | None = None,
) -> tuple[Source, list[dict[str, Any]]]:
    """The rows of (task, split, lang) in the source's own schema, and the source."""
    spec = SOURCES[task]
    src = spec.source_for(split, lang)
    if data_dir is not None:
        path = local_path(data_dir, task, lang, split)
        if path.is_file():
            return src, _read_jsonl(path)
    if spec.local_only:
        where = local_path(data_dir or Path("<data-dir>"), task, lang, split)
        raise UserError(f"task '{task}': no file {where}; {spec.local_only}")
    rows: list[dict[str, Any]] = []
    for one in (src, *spec.extra.get(split, ())):
        rows += _load_source(
            task, one, spec, lang, data_dir=data_dir, hub_mirror=hub_mirror, split=split
        )
    return src, rows


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.cache
def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` (once per process): an
    unreachable hub then fails (or serves the HF cache) at once instead of after a minute of
    retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _set_offline(on: bool | None) -> tuple[bool, bool]:
    """Set Hugging Face's offline switch (``HF_HUB_OFFLINE`` is read once, at import, into these
    constants) when ``on`` is not None; returns the previous values for :func:`_restore_offline`."""
    import datasets.config
    import huggingface_hub.constants

    before = (bool(datasets.config.HF_HUB_OFFLINE), bool(huggingface_hub.constants.HF_HUB_OFFLINE))
    if on is not None:
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = on
    return before


def _restore_offline(before: tuple[bool, bool]) -> None:
    import datasets.config
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = before


def _load_source(
    task: str,
    src: Source,
    spec: TaskSources,
    lang: str,
    *,
    data_dir: Path | None,
    hub_mirror: Path | None,
    split: str,
) -> list[dict[str, Any]]:
    import datasets

    code, name = spec.code(lang), spec.names.get(lang, lang)
    fmt = {"code": code, "name": name}
    # an unreachable hub is retried with a warning per try; the one line below says it all
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    host = urllib.parse.urlsplit(
        (src.url or "").format(**fmt) if src.builder else _hub_endpoint()
    ).hostname
    offline = hub_mirror is None and bool(host) and not _reachable(str(host))
    # offline: only what the HF cache holds, at once (no retries against a dead host)
    switch = _set_offline(True if offline else None)
    try:
        if src.builder:
            url = (src.url or "").format(**fmt)
            if hub_mirror is not None:
                url = str(hub_mirror / "urls" / url.rsplit("/", 1)[-1])
            kwargs: dict[str, Any] = {"field": src.field} if src.field else {}
            ds = datasets.load_dataset(
                src.builder, data_files={"train": url}, split="train", **kwargs
            )
        else:
            path = str(hub_mirror / src.dataset) if hub_mirror is not None else src.dataset
            config = src.config.format(**fmt) if src.config else None
            files = src.data_files.format(**fmt) if src.data_files else None
            ds = datasets.load_dataset(
                path,
                config,
                split=src.split,
                data_files=files,
                data_dir=src.data_dir,
                revision=None if hub_mirror is not None else src.revision,
            )
    except Exception as exc:  # the hub raises many types (offline, missing, 404, timeout)
        reason = (
            f"{host} is unreachable and the HF cache has no copy"
            if offline
            else " ".join(str(exc).split())[:160] or type(exc).__name__
        )
        where = local_path(data_dir or Path("<data-dir>"), task, lang, split)
        raise UserError(
            f"task '{task}' ({lang}): cannot load {src.describe(code, name)} "
            f"({reason if offline else f'{type(exc).__name__}: {reason}'}); go online once to fill the HF cache, or give --data-dir with {where} "
            f"rows of {SCHEMA_FIELDS.get(src.schema, src.schema)}"
        ) from None
    finally:
        hub_log.setLevel(level)
        _restore_offline(switch)
    rows: list[dict[str, Any]] = ds.to_list()
    if src.keep:
        keep = KEEP[src.keep]
        rows = [r for r in rows if keep(r, name)]
    return rows


def read(
    task: TaskSpec,
    split: str,
    lang: str,
    *,
    data_dir: Path | None,
    hub_mirror: Path | None = None,
) -> list[dict[str, Any]]:
    """Canonical examples of a real task (see raystilts.tasks.catalog.read_examples)."""
    schema = SOURCES[task.name].source_for(split, lang).schema
    if schema in READERS:  # the schema's rows are not examples one to one
        return READERS[schema](task, split, lang, data_dir=data_dir, hub_mirror=hub_mirror)
    src, rows = read_rows(task.name, split, lang, data_dir=data_dir, hub_mirror=hub_mirror)
    return SCHEMAS[src.schema](rows, task)


def _read_mewslix(
    task: TaskSpec,
    split: str,
    lang: str,
    *,
    data_dir: Path | None,
    hub_mirror: Path | None = None,
) -> list[dict[str, Any]]:
    """Mentions of ``lang``'s WikiNews articles query the shared entity candidate set (the
    task file that holds "candidates")."""
    _, docs = read_rows(task.name, split, lang, data_dir=data_dir)
    spec = SOURCES[task.name]
    cand_path = (data_dir or Path("<data-dir>")) / task.name / str(spec.task_file("candidates"))
    if not cand_path.is_file():
        raise UserError(f"task '{task.name}': no file {cand_path}; {spec.local_only}")
    queries = []
    for doc in docs:
        text = doc["context"]["text"]
        spans = doc["context"].get("sentence_spans") or [[0, len(text)]]
        for m in doc["mentions"]:
            start = int(m["mention_span"]["start"])
            # the sentence holding the mention is the query's context
            s, e = next(((a, b) for a, b in spans if a <= start < b), (0, len(text)))
            queries.append(
                {
                    "role": "query",
                    "id": str(m["example_id"]),
                    "text": text[s:e],
                    "gold": [str(m["entity_id"])],
                }
            )
    cands = [
        {"role": "candidate", "id": str(r["entity_id"]), "text": r["description"], "gold": []}
        for r in _read_jsonl(cand_path)
    ]
    return queries + cands


def _read_lareqa(
    task: TaskSpec,
    split: str,
    lang: str,
    *,
    data_dir: Path | None,
    hub_mirror: Path | None,
) -> list[dict[str, Any]]:
    """LAReQA (XQuAD-R): questions in ``lang`` retrieve answer sentences in every language.

    Candidates are the sentences of all languages' paragraphs; a question's gold candidates are
    the sentences holding its answer in each language (questions share ids across languages).
    """
    answer_of: dict[str, list[str]] = {}
    cands: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    for other in task.languages:
        _, rows = read_rows(task.name, split, other, data_dir=data_dir, hub_mirror=hub_mirror)
        for a, article in enumerate(rows):
            for p, para in enumerate(article["paragraphs"]):
                sentences, breaks = _sentences(para)
                ids = [f"{other}:{a}:{p}:{k}" for k in range(len(sentences))]
                cands += [
                    # as XTREME-R: a candidate is its sentence followed by its context
                    {"role": "candidate", "id": i, "text": t + para["context"], "gold": []}
                    for i, t in zip(ids, sentences, strict=True)
                ]
                for qa in para["qas"]:
                    start = int(qa["answers"][0]["answer_start"])
                    k = sum(1 for b in breaks if b <= start) - 1
                    answer_of.setdefault(str(qa["id"]), []).append(ids[max(k, 0)])
                    if other == lang:
                        questions.append({"id": str(qa["id"]), "text": qa["question"]})
    queries = [
        {"role": "query", "id": q["id"], "text": q["text"], "gold": answer_of[q["id"]]}
        for q in questions
    ]
    return queries + cands


Reader = Callable[..., list[dict[str, Any]]]
# schemas whose canonical examples come from more than the rows of one (split, language)
READERS: dict[str, Reader] = {"mewslix": _read_mewslix, "xquad_r": _read_lareqa}


def _sentences(para: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    """XQuAD-R paragraphs list ``sentences`` and their start offsets ``sentence_breaks``."""
    context = para["context"]
    if "sentence_breaks" in para:
        breaks = [int(b[0]) if isinstance(b, list) else int(b) for b in para["sentence_breaks"]]
        ends = [*breaks[1:], len(context)]
        return [context[b:e].strip() for b, e in zip(breaks, ends, strict=True)], breaks
    return [context], [0]
