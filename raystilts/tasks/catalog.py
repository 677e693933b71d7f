"""The task catalog: what each task is (type, labels, metric, languages) and where its data lives.

    from raystilts.tasks.catalog import CATALOG
    CATALOG["mini_xnli"].languages   # ('en', 'qaa', 'qab', 'qac', 'qad', 'qae')

A task is plain data. Loading reads JSON lines in the task's schema from a data directory laid
out as ``<data_dir>/<task>/<lang>/<split>.jsonl``; the embedded benchmark writes exactly that.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from raystilts.core.errors import UserError
from raystilts.core.languages import BENCHMARK_LANGUAGES
from raystilts.core.schema import AVG, metric_key
from raystilts.tasks import embedded as mini
from raystilts.tasks import sources

__all__ = [
    "CATALOG",
    "TaskSpec",
    "data_fingerprint",
    "example_text",
    "get_task",
    "read_examples",
    "selection_key",
    "task_labels",
    "with_labels",
]

TaskKind = Literal["classification", "multiple_choice", "qa", "tagging", "retrieval", "mlm"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One task. ``text_fields`` are the input columns (one or two); ``label_field`` the output."""

    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    metric: str  # the primary metric, used for selection and reporting
    languages: tuple[str, ...]
    is_target: bool
    source: str  # where the data comes from, as `raystilts tasks` shows it
    description: str
    # embedded tasks only: the input columns (one or two) and the output column of their rows
    text_fields: tuple[str, ...] = ()
    label_field: str = ""
    # XTREME's category of a target ("classification", "structured_prediction",
    # "question_answering", "retrieval"); None for intermediate tasks
    category: str | None = None
    # the English task this one is a machine translation of ("translate-train" data), if any
    translation_of: str | None = None
    # metrics averaged into the task's benchmark score (XTREME: QA is the mean of EM and F1)
    score_metrics: tuple[str, ...] = ()
    # preferred maximum tokens per feature (QA: 384); None: the search's max_length
    max_length: int | None = None
    # languages whose train splits are concatenated for training (MLM, translate-train: several)
    train_languages: tuple[str, ...] = ("en",)
    # False for zero-shot retrieval targets (BUCC, Tatoeba...): evaluated without training
    has_train: bool = True
    # SQuAD v2.0-style unanswerable questions
    allow_unanswerable: bool = False
    # languages evaluated on dev only (model selection), outside the benchmark's test average:
    # XCOPA's English (COPA) is not one of XTREME-R's XCOPA languages
    dev_only: tuple[str, ...] = ()

    @property
    def benchmark_metrics(self) -> tuple[str, ...]:
        return self.score_metrics or (self.metric,)

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    def splits(self, lang: str) -> tuple[str, ...]:
        """Splits available in ``lang``: targets are zero-shot, so only English has ``train``
        (and only when ``has_train``); MLM and translate-train tasks train in every
        ``train_languages`` language. Every evaluation language has ``dev`` and ``test``."""
        if self.source == "embedded":
            return mini.splits_of(self.name, lang)
        if lang not in self.languages and lang not in self.train_languages:
            return ()
        train = self.has_train and lang in self.train_languages
        evaluation = ("dev",) if lang in self.dev_only else ("dev", "test")
        return ("train", *evaluation) if train else evaluation


_MINI_CATEGORY = {"mini_xnli": "classification", "mini_udpos": "structured_prediction"}


def _mini(
    name: str, kind: TaskKind, labels: tuple[str, ...], fields: tuple[str, ...], description: str
) -> TaskSpec:
    return TaskSpec(
        name=name,
        kind=kind,
        labels=labels,
        metric="accuracy",
        languages=mini.languages_of(name),
        is_target=name in mini.TARGET_TASKS,
        text_fields=fields,
        label_field="tags" if kind == "tagging" else "label",
        source="embedded",
        description=description,
        category=_MINI_CATEGORY.get(name),
    )


_PAIR = ("premise", "hypothesis")
CATALOG: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        _mini(
            "mini_mnli", "classification", mini.NLI_LABELS, _PAIR, "English NLI, large (as MNLI)"
        ),
        _mini(
            "mini_qqp",
            "classification",
            ("different", "paraphrase"),
            _PAIR,
            "English paraphrase pairs (as QQP)",
        ),
        _mini(
            "mini_ccg",
            "tagging",
            mini.CCG_TAGS,
            ("tokens",),
            "English role supertags, verbs by class (as CCG)",
        ),
        _mini(
            "mini_topic",
            "classification",
            mini.VERB_CLASSES,
            ("sentence",),
            "English verb class (unrelated skill)",
        ),
        _mini(
            "mini_xnli",
            "classification",
            mini.NLI_LABELS,
            _PAIR,
            "NLI, 32 English train, 6 languages (as XNLI)",
        ),
        _mini(
            "mini_udpos",
            "tagging",
            mini.UDPOS_TAGS,
            ("tokens",),
            "fine POS tags (objects apart, verbs by class), 20 English train, 6 languages (as UDPOS)",
        ),
    )
}


# --------------------------------------------------------------------------- real tasks
#
# Language lists are the benchmarks' own (raystilts.core.languages.BENCHMARK_LANGUAGES), English
# first. Tasks whose XTREME-R language list differs from XTREME's have their own name with an
# ``_r`` suffix (udpos_r, panx_r, tatoeba_r): a space names the benchmark it reproduces by its
# task names, and `languages: null` then means exactly that benchmark's languages. Tasks whose
# lists agree (xnli, mlqa, tydiqa) are shared by both benchmarks; xquad_r adds XTREME-R's ro.

_X = BENCHMARK_LANGUAGES["xtreme"]
_XR = BENCHMARK_LANGUAGES["xtreme_r"]
_QA = ("exact_match", "f1")
_EN = ("en",)


def _en_first(langs: tuple[str, ...]) -> tuple[str, ...]:
    """English first where the task has it (BUCC and Tatoeba pair xx with en: no en set)."""
    return ("en", *(x for x in langs if x != "en")) if "en" in langs else langs


def _real(
    name: str,
    kind: TaskKind,
    description: str,
    *,
    labels: tuple[str, ...] = (),
    metric: str = "accuracy",
    languages: tuple[str, ...] = _EN,
    category: str | None = None,
    **kw: Any,
) -> TaskSpec:
    return TaskSpec(
        name=name,
        kind=kind,
        labels=labels,
        metric=metric,
        languages=_en_first(languages),
        is_target=category is not None,
        category=category,
        source=sources.SOURCES[name].summary(),
        description=description,
        **kw,
    )


_QA_KW: dict[str, Any] = {"metric": "f1", "score_metrics": _QA, "max_length": 384}
_WIKI_LANGS = _X["panx"]  # the 40 XTREME languages

_REAL: tuple[TaskSpec, ...] = (
    # English intermediate tasks (Phang et al. 2020, Table 1)
    _real(
        "anli",
        "classification",
        "ANLI+: ANLI R1-R3 with MNLI and SNLI, one NLI head",
        labels=sources.NLI_LABELS,
    ),
    _real("mnli", "classification", "MultiNLI", labels=sources.NLI_LABELS),
    _real("qqp", "classification", "Quora Question Pairs", labels=("different", "duplicate")),
    _real("squad_v1", "qa", "SQuAD v1.1 extractive QA", **_QA_KW),
    _real(
        "squad_v2",
        "qa",
        "SQuAD v2.0 extractive QA with unanswerable questions",
        allow_unanswerable=True,
        **_QA_KW,
    ),
    _real("hellaswag", "multiple_choice", "HellaSwag sentence completion (4 endings)"),
    _real("cosmosqa", "multiple_choice", "Cosmos QA reading comprehension (4 answers)"),
    _real("commonsenseqa", "multiple_choice", "CommonsenseQA (5 answers)"),
    _real(
        "ccg",
        "tagging",
        "CCG supertagging (CCGbank, local files; tags from <data-dir>/ccg/tags.txt)",
        metric="accuracy",
    ),
    # XTREME targets
    _real(
        "xnli",
        "classification",
        "XNLI; English training data is MNLI",
        labels=sources.NLI_LABELS,
        languages=_X["xnli"],
        category="classification",
    ),
    _real(
        "pawsx",
        "classification",
        "PAWS-X paraphrase identification",
        labels=("different", "paraphrase"),
        languages=_X["pawsx"],
        category="classification",
    ),
    _real(
        "udpos",
        "tagging",
        "UD 2.5 part-of-speech tagging",
        labels=sources.UPOS_TAGS,
        metric="f1",
        languages=_X["udpos"],
        category="structured_prediction",
    ),
    _real(
        "panx",
        "tagging",
        "PAN-X (WikiANN) named entities",
        labels=sources.NER_TAGS,
        metric="f1",
        languages=_X["panx"],
        category="structured_prediction",
    ),
    _real(
        "xquad",
        "qa",
        "XQuAD; English training data is SQuAD v1.1",
        languages=_X["xquad"],
        category="question_answering",
        **_QA_KW,
    ),
    _real(
        "mlqa",
        "qa",
        "MLQA (context and question in one language); trains on SQuAD v1.1",
        languages=_X["mlqa"],
        category="question_answering",
        **_QA_KW,
    ),
    _real(
        "tydiqa",
        "qa",
        "TyDiQA-GoldP; trains on its English part",
        languages=_X["tydiqa"],
        category="question_answering",
        **_QA_KW,
    ),
    _real(
        "bucc",
        "retrieval",
        "BUCC 2018 bitext mining (margin scoring), no training; the hub copy has gold pairs only: "
        "benchmark numbers need the full files (unpaired sentences too) via --data-dir",
        metric="f1",
        languages=_X["bucc2018"],
        category="retrieval",
        has_train=False,
    ),
    _real(
        "tatoeba",
        "retrieval",
        "Tatoeba sentence retrieval (each English sentence finds its xx translation), no training",
        languages=_X["tatoeba"],
        category="retrieval",
        has_train=False,
    ),
    # XTREME-R
    _real(
        "xcopa",
        "multiple_choice",
        "XCOPA causal commonsense; English training data is COPA",
        languages=("en", *_XR["xcopa"]),
        dev_only=("en",),
        category="classification",
    ),
    _real(
        "udpos_r",
        "tagging",
        "UD 2.7 POS tagging, XTREME-R's 38 languages",
        labels=sources.UPOS_TAGS,
        metric="f1",
        languages=_XR["udpos"],
        category="structured_prediction",
    ),
    _real(
        "panx_r",
        "tagging",
        "WikiANN named entities, XTREME-R's 48 languages",
        labels=sources.NER_TAGS,
        metric="f1",
        languages=_XR["panx"],
        category="structured_prediction",
    ),
    _real(
        "xquad_r",
        "qa",
        "XQuAD with XTREME-R's 12 languages (Romanian added); trains on SQuAD v1.1",
        languages=_XR["xquad"],
        category="question_answering",
        **_QA_KW,
    ),
    _real(
        "tatoeba_r",
        "retrieval",
        "Tatoeba retrieval, XTREME-R's 41 languages, no training",
        languages=_XR["tatoeba"],
        category="retrieval",
        has_train=False,
    ),
    _real(
        "mewslix",
        "retrieval",
        "Mewsli-X entity retrieval (mAP@20), evaluated without training",
        metric="map@20",
        languages=_XR["mewslix"],
        category="retrieval",
        has_train=False,
    ),
    _real(
        "lareqa",
        "retrieval",
        "LAReQA (XQuAD-R) answer-sentence retrieval across languages (mAP@20), no training",
        metric="map@20",
        languages=_XR["lareqa"],
        category="retrieval",
        has_train=False,
    ),
    # variants: machine-translated training data ("translate-train") and multilingual MLM
    _real(
        "xnli_tt",
        "classification",
        "XNLI-MT: MNLI machine-translated into the XNLI languages",
        labels=sources.NLI_LABELS,
        languages=_X["xnli"],
        translation_of="mnli",
        train_languages=_en_first(_X["xnli"]),
    ),
    _real(
        "pawsx_tt",
        "classification",
        "PAWS-X machine-translated training sets",
        labels=("different", "paraphrase"),
        languages=_X["pawsx"],
        translation_of="pawsx",
        train_languages=_en_first(_X["pawsx"]),
    ),
    _real(
        "squad_tt",
        "qa",
        "SQuAD v1.1 machine-translated into the XQuAD languages (XTREME translate-train)",
        languages=_X["xquad"],
        translation_of="squad_v1",
        train_languages=_en_first(_X["xquad"]),
        **_QA_KW,
    ),
    _real(
        "tydiqa_tt",
        "qa",
        "TyDiQA-GoldP English train machine-translated (XTREME translate-train)",
        languages=_X["tydiqa"],
        translation_of="tydiqa",
        train_languages=_en_first(_X["tydiqa"]),
        **_QA_KW,
    ),
    _real(
        "wiki_mlm",
        "mlm",
        "masked-LM on Wikipedia in the 40 XTREME languages (mix into intermediate training)",
        metric="accuracy",
        languages=_WIKI_LANGS,
        train_languages=_en_first(_WIKI_LANGS),
    ),
)

for _task in _REAL:
    CATALOG[_task.name] = _task


def get_task(name: str) -> TaskSpec:
    try:
        return CATALOG[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"unknown task '{name}'{hint}; run 'raystilts tasks' to list tasks"
        ) from None


def read_examples(
    task: TaskSpec,
    split: str,
    lang: str,
    *,
    data_dir: Path | None,
    hub_mirror: Path | None = None,
) -> list[dict[str, Any]]:
    """Canonical examples (see the module docstring of raystilts.tasks.sources for the order:
    ``<data_dir>/<task>/<lang>/<split>.jsonl``, then the hub, then a one-line UserError)."""
    if task.source != "embedded":
        if split not in task.splits(lang):
            have = ", ".join(task.splits(lang)) or "none"
            raise UserError(
                f"task '{task.name}' has no {split} split in '{lang}' (it has: {have}); "
                "targets train in English only, retrieval tasks not at all"
            )
        return sources.read(task, split, lang, data_dir=data_dir, hub_mirror=hub_mirror)
    if data_dir is None:
        raise UserError(f"task '{task.name}': embedded data needs a data directory")
    path = data_dir / task.name / lang / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(
            f"task '{task.name}': no {split} data for language '{lang}' at {path}; "
            f"put JSON lines with fields {', '.join(task.text_fields)}, {task.label_field} there"
        )
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [_canonical(task, r) for r in rows]


def data_fingerprint(task: TaskSpec, split: str, lang: str, data_dir: Path | None) -> str:
    """A short key of the data ``read_examples`` would read: the local file's path, size and
    modification time (plus the task directory's own files: CCG's tags, Mewsli-X's entities),
    or ``"hub"`` when the data comes from the task's source. Feature caches key on it, so
    edited files or fixtures swapped for real data are never served stale features."""
    import hashlib

    if data_dir is None or not sources.local_path(data_dir, task.name, lang, split).is_file():
        # the source's definition (dataset id, config, split, schema) keys hub data
        where = repr(sources.SOURCES.get(task.name)).encode()
        return "hub" + hashlib.sha256(where).hexdigest()[:8]
    path = sources.local_path(data_dir, task.name, lang, split)
    h = hashlib.sha256()
    shared = sorted(p for p in (data_dir / task.name).iterdir() if p.is_file())
    # a task that reads every language (LAReQA's candidates: all languages' sentences)
    spec = sources.SOURCES.get(task.name)
    every = spec is not None and spec.every_language
    others = sorted((data_dir / task.name).glob(f"*/{split}.jsonl")) if every else []
    for p in (path, *shared, *others):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def task_labels(task: TaskSpec, data_dir: Path | None) -> tuple[str, ...]:
    """The label names of ``task``: its own, or those of its task file that holds "labels"
    (CCG's supertags in ``<data_dir>/ccg/tags.txt``: CCGbank is licensed, so its tag set ships
    with the user's files, not with raystilts)."""
    spec = sources.SOURCES.get(task.name)
    labels_file = spec.task_file("labels") if spec is not None else None
    if task.labels or spec is None or labels_file is None:
        return task.labels
    path = (data_dir or Path("<data-dir>")) / task.name / labels_file
    if not path.is_file():
        raise UserError(f"task '{task.name}': no file {path}; {spec.local_only}")
    return tuple(t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip())


def with_labels(task: TaskSpec, data_dir: Path | None) -> TaskSpec:
    """``task`` with its data-dependent labels filled in (from a labels task file: CCG)."""
    labels = task_labels(task, data_dir)
    return task if labels == task.labels else dataclasses.replace(task, labels=labels)


def _canonical(task: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
    """A row of the task's own schema as the canonical example of its kind (see CONTRACT)."""
    if task.kind == "classification":
        return {"text": [row[f] for f in task.text_fields], "label": int(row[task.label_field])}
    if task.kind == "tagging":
        return {"tokens": list(row["tokens"]), "tags": list(row[task.label_field])}
    return row


def selection_key(task: TaskSpec) -> str:
    """The metric a search selects chains for ``task`` on: English dev (strict zero-shot), or
    for a target without training data (zero-shot retrieval, no English dev set of its own) the
    dev mean over its languages."""
    return metric_key("dev", task.name, "en" if task.has_train else AVG, task.metric)


def example_text(task: TaskSpec, ex: dict[str, Any]) -> str:
    """One plain string per canonical example (what a text-embedding estimate reads)."""
    kind = task.kind
    if kind == "classification":
        return " ".join(ex["text"])
    if kind == "tagging":
        return " ".join(ex["tokens"])
    if kind == "multiple_choice":
        return " ".join([ex["context"], *ex["choices"]])
    if kind == "qa":
        return f"{ex['question']} {ex['context']}"
    return str(ex["text"])  # retrieval, mlm
