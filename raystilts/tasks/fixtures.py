"""Made-up data in every real task's REAL schema, for tests and for trying a space offline.

    raystilts fixtures /tmp/fx                      # <dir>/<task>/<lang>/<split>.jsonl, all tasks
    raystilts search my_space.yaml --data-dir /tmp/fx

    from raystilts.tasks.fixtures import write_fixtures, write_hub_mirror
    write_fixtures(tmp, tasks=["xnli"])             # local files, as --data-dir reads them
    write_hub_mirror(tmp / "hub", tasks=["xnli"])   # parquet laid out like the hub repositories

Rows carry the field names, types and label encodings of the source each (task, split,
language) loads from (``raystilts.tasks.sources.SOURCES``): XNLI's English train rows look like GLUE
MNLI's, UDPOS tags are the hub's ClassLabel ids, QA answers start where their text is in the
context, SQuAD v2.0 has unanswerable questions, BUCC and Tatoeba are sentence pairs, Mewsli-X
is WikiNews articles with mentions plus a candidate entity file. Everything is a pure function
of (task, split, language): the same call writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raystilts.tasks import sources
from raystilts.tasks.sources import SOURCES, Source

__all__ = ["EXAMPLES", "fixture_rows", "write_fixtures", "write_hub_mirror"]

EXAMPLES = 6  # rows per (task, split, language): enough for every label, small enough to be fast
_WORDS = tuple(
    [
        "river",
        "stone",
        "house",
        "light",
        "garden",
        "window",
        "mountain",
        "bread",
        "music",
        "letter",
        "forest",
        "road",
        "teacher",
        "city",
        "market",
        "winter",
        "island",
        "bridge",
        "lamp",
        "field",
    ]
)
_SUPERTAGS = ("N", "NP[nb]/N", "(S[dcl]\\NP)/NP", "S[dcl]\\NP", ".", "N/N", "PP/NP")


def _rng(*key: str) -> random.Random:
    return random.Random(int(hashlib.sha256("/".join(key).encode()).hexdigest()[:12], 16))


def _sentence(rng: random.Random, lang: str, n: int = 6) -> str:
    # a language tag on each word keeps languages apart while staying plain text
    return " ".join(f"{rng.choice(_WORDS)}{'' if lang == 'en' else '-' + lang}" for _ in range(n))


# --------------------------------------------------------------------------- rows per schema


def _squad_row(
    rng: random.Random, lang: str, i: int, key: str, *, answerable: bool
) -> dict[str, Any]:
    answer = _sentence(rng, lang, 2)
    before, after = _sentence(rng, lang, 5), _sentence(rng, lang, 4)
    context = f"{before} {answer} {after}."
    texts, starts = ([answer], [len(before) + 1]) if answerable else ([], [])
    return {
        "id": f"{key}-{i}",
        "title": f"Title {i}",
        "context": context,
        "question": f"what {_sentence(rng, lang, 3)}?",
        "answers": {"text": texts, "answer_start": starts},
    }


def _mention_doc(rng: random.Random, lang: str, i: int) -> dict[str, Any]:
    first, mention, rest = _sentence(rng, lang, 4), f"Entity{i % 3}", _sentence(rng, lang, 3)
    s1 = f"{first} {mention} {rest}."
    s2 = f"{_sentence(rng, lang, 5)}."
    text = f"{s1} {s2}"
    start = len(first) + 1
    return {
        "context": {
            "document_id": f"{lang}-doc{i}",
            "document_url": f"https://{lang}.wikinews.org/wiki/doc{i}",
            "document_title": f"doc {i}",
            "section_title": "",
            "language": lang,
            "text": text,
            "sentence_spans": [[0, len(s1)], [len(s1) + 1, len(text)]],
        },
        "mentions": [
            {
                "example_id": f"{lang}-doc{i}-m0",
                "entity_id": f"Q{100 + i % 3}",
                "mention_span": {"text": mention, "start": start, "end": start + len(mention)},
            }
        ],
    }


def _lareqa_article(lang: str, n: int) -> dict[str, Any]:
    """XQuAD-R: the same questions (same ids) in every language, answers in known sentences."""
    paragraphs = []
    for p in range(2):
        rng = _rng("lareqa", lang, str(p))
        sentences = [f"{_sentence(rng, lang, 5)}." for _ in range(3)]
        context = " ".join(sentences)
        breaks = [sum(len(s) + 1 for s in sentences[:k]) for k in range(3)]
        qas = []
        for q in range(n // 2):
            k = (p + q) % 3
            answer = sentences[k].split()[0]
            qas.append(
                {
                    "id": f"p{p}q{q}",  # shared across languages, as XQuAD-R's ids are
                    "question": f"which {_sentence(rng, lang, 3)}?",
                    "answers": [{"text": answer, "answer_start": breaks[k]}],
                }
            )
        paragraphs.append(
            {"context": context, "sentences": sentences, "sentence_breaks": breaks, "qas": qas}
        )
    return {"title": "xquad-r", "paragraphs": paragraphs}


@dataclass(frozen=True)
class _Row:
    """What a row maker gets: the row's index, two sentences drawn for it, and where it goes."""

    rng: random.Random
    lang: str
    i: int
    s1: str
    s2: str
    key: str  # the split (or file) the row belongs to
    name: str
    task: str


def _squad(r: _Row) -> dict[str, Any]:
    # SQuAD v2.0-style data (and only it) has unanswerable questions: every third one
    unanswerable = r.task == "squad_v2" and r.i % 3 == 2
    prefix = f"{r.name}-{r.key}" if r.name else r.key
    return _squad_row(r.rng, r.lang, r.i, prefix, answerable=not unanswerable)


def _hellaswag(r: _Row) -> dict[str, Any]:
    ctx_a, ctx_b = _sentence(r.rng, r.lang, 5), _sentence(r.rng, r.lang, 2)
    return {
        "ind": r.i,
        "activity_label": "Gardening",
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": f"{ctx_a} {ctx_b}",
        "endings": [_sentence(r.rng, r.lang, 4) for _ in range(4)],
        "source_id": f"activitynet~v_{r.i}",
        "split": r.key,
        "split_type": "indomain",
        "label": str(r.i % 4),  # HellaSwag's labels are strings
    }


def _commonsenseqa(r: _Row) -> dict[str, Any]:
    return {
        "id": f"{r.key}-{r.i}",
        "question": f"where {r.s1}?",
        "question_concept": r.rng.choice(_WORDS),
        "choices": {
            "label": ["A", "B", "C", "D", "E"],
            "text": [r.rng.choice(_WORDS) + str(k) for k in range(5)],
        },
        "answerKey": "ABCDE"[r.i % 5],
    }


def _copa(r: _Row) -> dict[str, Any]:
    return {
        "premise": r.s1 + ".",
        "choice1": _sentence(r.rng, r.lang, 4) + ".",
        "choice2": _sentence(r.rng, r.lang, 4) + ".",
        "question": ("cause", "effect")[r.i % 2],
        "label": r.i % 2,
        "idx": r.i,
        **({"changed": False} if r.task == "xcopa" and r.lang != "en" else {}),
    }


def _panx(r: _Row) -> dict[str, Any]:
    tokens = r.s1.split()
    tags = [0] * len(tokens)
    tags[1], tags[2] = 1 + 2 * (r.i % 3), 2 + 2 * (r.i % 3)  # B-X I-X: one entity
    return {"tokens": tokens, "ner_tags": tags, "langs": [r.lang] * len(tokens)}


# schema (a key of raystilts.tasks.sources.SCHEMAS) -> one made-up row in that schema
_ROWS: dict[str, Callable[[_Row], dict[str, Any]]] = {
    "nli": lambda r: {"premise": r.s1, "hypothesis": r.s2, "label": r.i % 3, "idx": r.i},
    "qqp": lambda r: {
        "question1": r.s1 + "?",
        "question2": r.s2 + "?",
        "label": r.i % 2,
        "idx": r.i,
    },
    "pawsx": lambda r: {"id": r.i + 1, "sentence1": r.s1, "sentence2": r.s2, "label": r.i % 2},
    "squad": _squad,
    "hellaswag": _hellaswag,
    "cosmosqa": lambda r: {
        "id": f"{r.key}-{r.i}",
        "context": r.s1,
        "question": f"why {r.s2}?",
        **{f"answer{k}": _sentence(r.rng, r.lang, 3) for k in range(4)},
        "label": r.i % 4,
    },
    "commonsenseqa": _commonsenseqa,
    "copa": _copa,
    "udpos": lambda r: {
        "tokens": r.s1.split(),
        "pos_tags": [r.rng.randrange(len(sources.UPOS_TAGS)) for _ in r.s1.split()],
    },
    "panx": _panx,
    "ccg": lambda r: {
        "tokens": r.s1.split(),
        "tags": [r.rng.choice(_SUPERTAGS) for _ in r.s1.split()],
    },
    "bitext": lambda r: {
        "source_sentence": r.s1,
        "target_sentence": _sentence(r.rng, "en"),
        "source_lang": r.lang,
        "target_lang": "en",
    },
    "mteb_bitext": lambda r: {"sentence1": r.s1, "sentence2": _sentence(r.rng, "en")},
    "wiki": lambda r: {
        "id": str(r.i),
        "url": f"https://{r.lang}.wikipedia.org/wiki?curid={r.i}",
        "title": f"Article {r.i}",
        "text": f"{r.s1}. {r.s2}.",
    },
    "mewslix": lambda r: _mention_doc(r.rng, r.lang, r.i),
}


def _squad_json(rng: random.Random, lang: str, n: int, key: str) -> list[dict[str, Any]]:
    """One SQuAD-format JSON article of ``n`` answerable questions (translate-train files)."""
    _sentence(rng, lang), _sentence(rng, lang)  # the draws a row of every other schema starts with
    paras = []
    for i in range(n):
        r = _squad_row(rng, lang, i, key, answerable=True)
        qa = {
            "id": r["id"],
            "question": r["question"],
            "answers": [
                {"text": r["answers"]["text"][0], "answer_start": r["answers"]["answer_start"][0]}
            ],
        }
        paras.append({"context": r["context"], "qas": [qa]})
    return [{"title": f"translated {lang}", "paragraphs": paras}]


def fixture_rows(
    schema: str, *, key: str, lang: str, n: int = EXAMPLES, name: str = "", task: str = ""
) -> list[dict[str, Any]]:
    """``n`` made-up rows of ``schema`` (a key of raystilts.tasks.sources.SCHEMAS) for ``lang``."""
    rng = _rng(schema, key, lang)
    if schema == "squad_json":  # whole files, not rows
        return _squad_json(rng, lang, n, key)
    if schema == "xquad_r":
        return [_lareqa_article(lang, n)]
    if schema not in _ROWS:
        raise ValueError(f"no fixture for schema {schema!r}")
    make = _ROWS[schema]
    rows = []
    for i in range(n):
        s1, s2 = _sentence(rng, lang), _sentence(rng, lang)
        rows.append(make(_Row(rng, lang, i, s1, s2, key, name, task)))
    return rows


def _mewslix_candidates() -> list[dict[str, Any]]:
    rng = _rng("mewslix", "candidates")
    return [
        {
            "entity_id": f"Q{100 + k}",
            "title": f"Entity{k}",
            "description": f"Entity{k} is {_sentence(rng, 'en', 5)}.",
            "description_url": f"https://en.wikipedia.org/wiki/Entity{k}",
            "description_language": "en",
            "sentence_spans": [[0, 10]],
        }
        for k in range(5)
    ]


def _write_labels(path: Path) -> None:
    # the only labels file is CCG's: the supertags its fixture rows draw from
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(_SUPERTAGS) + "\n", encoding="utf-8")


# what a task file holds (raystilts.tasks.sources.TaskSources.task_files) -> its fixture writer
_TASK_FILES: dict[str, Callable[[Path], None]] = {
    "labels": _write_labels,
    "candidates": lambda path: _write_jsonl(path, _mewslix_candidates()),
}


# --------------------------------------------------------------------------- writers


def _tasks(tasks: Iterable[str] | None) -> list[str]:
    return list(SOURCES) if tasks is None else list(tasks)


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")


def write_fixtures(out_dir: Path, *, tasks: Iterable[str] | None = None, n: int = EXAMPLES) -> Path:
    """Write ``<out_dir>/<task>/<lang>/<split>.jsonl`` for every language and split of each
    task (all real tasks by default), plus the task files its sources declare (CCG's
    ``tags.txt``, Mewsli-X's candidates)."""
    from raystilts.tasks.catalog import CATALOG

    for name in _tasks(tasks):
        task, spec = CATALOG[name], SOURCES[name]
        for lang in dict.fromkeys((*task.languages, *task.train_languages)):
            for split in task.splits(lang):
                src = spec.source_for(split, lang)
                rows = fixture_rows(
                    src.schema,
                    key=split,
                    lang=lang,
                    n=n,
                    name=spec.names.get(lang, lang) if src.keep else "",
                    task=name,
                )
                _write_jsonl(sources.local_path(out_dir, name, lang, split), rows)
        for file_name, holds in spec.task_files.items():
            _TASK_FILES[holds](out_dir / name / file_name)
    return out_dir


def _base_splits(split: str) -> list[tuple[str, int]]:
    """Hub split names of a split expression and how many rows each needs ("train[200:]")."""
    out = []
    for part in split.split("+"):
        m = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", part.strip())
        if m is None:
            raise ValueError(f"unsupported split expression {split!r}")
        lo = int(m.group(2) or 0)
        out.append((m.group(1), lo + EXAMPLES))
    return out


def write_hub_mirror(
    mirror: Path, *, tasks: Iterable[str] | None = None, languages: Iterable[str] | None = None
) -> Path:
    """Write fixture rows as parquet in hub-repository layout (``<mirror>/<dataset id>/`` with
    a README listing its configs) and URL files under ``<mirror>/urls/``, so
    ``raystilts.tasks.sources.read(..., hub_mirror=mirror)`` runs the hub code path offline.
    ``languages`` limits each task to those of its languages (default: all)."""
    import datasets

    from raystilts.tasks.catalog import CATALOG

    wanted = None if languages is None else set(languages)
    # (dataset, config) -> hub split -> rows; URL file -> articles
    tables: dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]] = {}
    urls: dict[str, list[dict[str, Any]]] = {}
    for name in _tasks(tasks):
        task, spec = CATALOG[name], SOURCES[name]
        if spec.local_only:
            continue
        for lang in dict.fromkeys((*task.languages, *task.train_languages)):
            # a task that reads every language (LAReQA's candidates) always needs them all
            if wanted is not None and lang not in wanted | {"en"} and not spec.every_language:
                continue
            fmt = {"code": spec.code(lang), "name": spec.names.get(lang, lang)}
            for split in task.splits(lang):
                for src in (spec.source_for(split, lang), *spec.extra.get(split, ())):
                    _mirror_add(src, name, lang, fmt, tables, urls)
    for (dataset, config), splits in tables.items():
        root = mirror / dataset
        for split, rows in splits.items():
            path = root / (config or "data") / f"{split}-00000-of-00001.parquet"
            if config and config.endswith("/"):
                path = root / config / split / "0000.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows).to_parquet(str(path))
    for dataset in {d for d, _ in tables}:
        _write_readme(mirror / dataset, {c: s for (d, c), s in tables.items() if d == dataset})
    for file_name, articles in urls.items():
        path = mirror / "urls" / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": "fixture", "data": articles}), encoding="utf-8")
    return mirror


def _mirror_add(
    src: Source,
    task: str,
    lang: str,
    fmt: Mapping[str, str],
    tables: dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]],
    urls: dict[str, list[dict[str, Any]]],
) -> None:
    name = fmt["name"] if src.keep else ""
    if src.builder:
        file_name = (src.url or "").format(**fmt).rsplit("/", 1)[-1]
        urls[file_name] = fixture_rows(src.schema, key="url", lang=lang, task=task)
        return
    if src.data_files:  # one shard of a big dump: config folder from the file pattern
        config: str | None = src.data_files.format(**fmt).split("/", 1)[0]
        table = tables.setdefault((src.dataset, config), {})
        for split, n in _base_splits(src.split):
            if len(table.get(split, ())) < n:  # "train[200:]" and "train[:200]" share rows
                table[split] = fixture_rows(src.schema, key=split, lang=lang, n=n, task=task)
        return
    config = src.config.format(**fmt) if src.config else None
    if src.data_dir:  # the hub's parquet conversion: <data_dir>/<split>/0000.parquet
        config = f"{src.data_dir}/"
    table = tables.setdefault((src.dataset, config), {})
    for split, n in _base_splits(src.split):
        rows = fixture_rows(src.schema, key=split, lang=lang, n=n, name=name, task=task)
        if src.keep:  # one config holds every language: add this language's rows once
            have = table.setdefault(split, [])
            if not any(r["id"] == rows[0]["id"] for r in have):
                have += rows
        else:
            table[split] = rows


def _write_readme(root: Path, configs: Mapping[str | None, Mapping[str, list[Any]]]) -> None:
    """A dataset card whose ``configs`` YAML maps config names to parquet files (hub layout)."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        if config is not None and (config.startswith("2023") or config.endswith("/")):
            continue  # dump shards and parquet conversions are read by data_files / data_dir
        lines.append(f"- config_name: {json.dumps(config or 'default')}")
        if config is None:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split in splits:
            lines.append(f"  - split: {split}")
            pattern = f"{config or 'data'}/{split}-*.parquet"
            lines.append(f"    path: {json.dumps(pattern)}")
    if lines[-1] == "configs:":
        lines.pop()  # only dump shards: no configs to declare
    lines.append("---")
    (root / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
