"""The extractive QA kind (SQuAD v1.1/v2.0, XQuAD, MLQA, TyDiQA-GoldP): windows in, answer
strings out.

Canonical example: ``{"id", "context", "question", "answers": {"text": [...], "answer_start":
[...]}}``. Features: :func:`featurize_qa` windows (train windows carry start/end positions, the
others ``example_id`` and ``offsets``, and the cache keeps the examples decoding needs). Head:
``AutoModelForQuestionAnswering``. Score: span logits per window, :func:`decode_answers` per
example, SQuAD EM/F1 (MLQA's normalisation by language). :data:`KIND` is the kind's object.

    feats = featurize_qa(examples, tokenizer, max_length=384, doc_stride=128, train=False)
    # ... the model gives one start and one end logit per token of each feature ...
    preds = decode_answers(examples, feats, start_logits, end_logits)   # {example id: answer}

Both functions are pure: a fast tokenizer and canonical QA examples in, plain lists out, so the
features cache as Arrow columns and decoding is testable with made-up logits. The recipe is the
one of the Hugging Face ``run_qa.py`` example (which XTREME's baselines follow):

- a context longer than one window is split into several, consecutive windows sharing
  ``doc_stride`` context tokens, so an answer no longer than that lies whole in some window;
- a training window whose context does not hold the (first) answer, or whose question has no
  answer (SQuAD v2.0), points both positions at the CLS token: the model learns "no span here";
- decoding scores the ``n_best`` best starts and ends of every window of an example, keeps the
  best well-formed span across windows whose start token has its "max context" in that window
  (as transformers' ``squad_metrics.compute_predictions_logits``, which XTREME's ``run_squad.py``
  uses), and for SQuAD v2.0 answers "" when the CLS ("null") score beats that span by more than
  a threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raystilts.kinds.base import (
    Batch,
    Columns,
    EvalContext,
    Features,
    Kind,
    collate_rows,
    fixture_rng,
    fixture_sentence,
    made_up_task,
)
from raystilts.tasks.catalog import TaskSpec

__all__ = [
    "KIND",
    "MAX_QUESTION_LENGTH",
    "ExtractiveQA",
    "decode_answers",
    "doc_stride",
    "featurize_qa",
    "max_context_masks",
]

# XTREME's max_query_length: a longer question is cut to its first 64 tokens so that every
# window keeps room for context (a question filling the window would leave none to truncate).
MAX_QUESTION_LENGTH = 64

Span = tuple[int, int]  # [start, end) character offsets into the context


def featurize_qa(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_length: int,
    doc_stride: int,
    train: bool,
    max_question_length: int = MAX_QUESTION_LENGTH,
) -> dict[str, list[Any]]:
    """Tokenize QA examples into windows of at most ``max_length`` tokens (no padding).

    ``doc_stride`` is the number of context tokens two consecutive windows of one example share
    (the tokenizer's ``stride``, as in ``run_qa.py``; not the BERT scripts' step between windows).
    Questions are cut to ``max_question_length`` tokens, and to half the window at most.

    Columns, one row per window ("feature"):

    - train: ``input_ids``, ``start_positions``, ``end_positions``: token indices of the first
      answer's first and last token, or both the CLS index (0 for XLM-R, mBERT, mDeBERTa) when
      the answer is not wholly inside this window or the question is unanswerable;
    - eval: ``input_ids``, ``example_id``, ``offsets`` (per token ``[start, end]`` character
      offsets into the context, ``None`` for question and special tokens) and ``cls_index``
      (where the null answer is scored; ``decode_answers`` assumes 0 when the column is absent);
    - both: ``token_type_ids`` (question 0, context 1) when the tokenizer produces segment ids
      (BERT-family models such as mBERT; not XLM-R), so the model sees which part is which.

    The question comes first and the context is truncated, unless the tokenizer pads on the left
    (XLNet-style models, trained with the context first): then the order is swapped, as in
    ``run_qa.py``. The context tokens are found with ``sequence_ids()``, never by position.
    """
    max_question_length = _question_room(tokenizer, max_length, doc_stride, max_question_length)
    columns: dict[str, list[Any]] = (
        {"input_ids": [], "start_positions": [], "end_positions": []}
        if train
        else {"input_ids": [], "example_id": [], "offsets": [], "cls_index": []}
    )
    if not examples:
        return columns

    question_first = tokenizer.padding_side == "right"
    # leading whitespace only wastes tokens of the window (some SQuAD questions have plenty)
    questions = _clip_questions(
        [str(ex["question"]).lstrip() for ex in examples], tokenizer, max_question_length
    )
    contexts = [str(ex["context"]) for ex in examples]
    enc = tokenizer(
        *((questions, contexts) if question_first else (contexts, questions)),
        truncation="only_second" if question_first else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    for i in range(len(enc["input_ids"])):
        _add_window(columns, enc, i, examples, tokenizer, context_seq=1 if question_first else 0)
    return columns


def _question_room(tokenizer: Any, max_length: int, doc_stride: int, max_question: int) -> int:
    """The question length windows allow (at most half a window); refuses a slow tokenizer
    (no character offsets) and a ``doc_stride`` that leaves no new context per window."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"QA featurization needs a fast tokenizer (character offsets); got "
            f"{type(tokenizer).__name__}: load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    text_room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    # a question never takes more than half a window, however short the windows are
    max_question = max(1, min(max_question, text_room // 2))
    room = text_room - max_question  # context tokens in a window with the longest question
    if not 0 <= doc_stride < room:
        raise ValueError(
            f"doc_stride={doc_stride} must be >= 0 and smaller than the context tokens of a window "
            f"({room} with max_length={max_length} and questions of up to {max_question} "
            f"tokens): lower doc_stride or raise max_length"
        )
    return max_question


def _add_window(
    columns: dict[str, list[Any]],
    enc: Any,
    i: int,
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    context_seq: int,
) -> None:
    """Append window ``i`` of the tokenizer's output ``enc`` to ``columns`` (train columns when
    ``columns`` has ``start_positions``, else eval columns)."""
    ids = enc["input_ids"][i]
    ex = examples[enc["overflow_to_sample_mapping"][i]]
    offsets: list[Span | None] = [
        (int(o[0]), int(o[1])) if seq == context_seq else None
        for o, seq in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True)
    ]
    cls_index = _cls_index(ids, tokenizer)
    columns["input_ids"].append(list(ids))
    if "token_type_ids" in enc:  # segment ids, for models whose tokenizer makes them (BERT)
        columns.setdefault("token_type_ids", []).append(list(enc["token_type_ids"][i]))
    if "start_positions" in columns:
        start, end = _answer_tokens(ex["answers"], offsets, cls_index)
        columns["start_positions"].append(start)
        columns["end_positions"].append(end)
    else:
        columns["example_id"].append(str(ex["id"]))
        columns["offsets"].append([list(o) if o is not None else None for o in offsets])
        columns["cls_index"].append(cls_index)


def _clip_questions(questions: list[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut each question after its ``max_tokens``-th token (by the tokenizer's own offsets)."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [
        q[: offs[max_tokens - 1][1]] if len(offs) > max_tokens else q
        for q, offs in zip(questions, enc["offset_mapping"], strict=True)
    ]


def _cls_index(ids: Sequence[int], tokenizer: Any) -> int:
    """Where the CLS token sits (first for BERT/XLM-R, last for XLNet); 0 without one."""
    cls = tokenizer.cls_token_id
    return ids.index(cls) if cls is not None and cls in ids else 0


def _answer_tokens(
    answers: Mapping[str, Sequence[Any]], offsets: Sequence[Span | None], cls_index: int
) -> tuple[int, int]:
    """Token indices of the first answer's span in this window, or (CLS, CLS) if not inside."""
    if not answers["answer_start"]:
        return cls_index, cls_index  # unanswerable (SQuAD v2.0)
    start_char = int(answers["answer_start"][0])
    end_char = start_char + len(answers["text"][0])
    in_context = [i for i, o in enumerate(offsets) if o is not None]
    if not in_context:
        return cls_index, cls_index
    first, last = in_context[0], in_context[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):  # type: ignore[index]
        return cls_index, cls_index  # the answer is (partly) outside this window
    # the last token starting at or before the answer's start, the first ending at or after its end
    start = max(i for i in in_context if offsets[i][0] <= start_char)  # type: ignore[index]
    end = min(i for i in in_context if offsets[i][1] >= end_char)  # type: ignore[index]
    return start, max(start, end)


# 69 lines, of which 30 are the docstring and its doctest (the decoding rules in one place);
# the per-example work is in _decode_example and _best_of_windows
def decode_answers(
    examples: Sequence[Mapping[str, Any]],
    features: Mapping[str, Sequence[Any]],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_unanswerable: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> dict[str, str]:
    """The best answer string of every example, from the per-window start and end logits.

    ``features`` are ``featurize_qa(..., train=False)``'s columns (``example_id``, ``offsets``,
    optionally ``cls_index``); ``start_logits[i]``/``end_logits[i]`` are feature i's 1-D logits,
    of which the first ``len(offsets[i])`` count (the rest is batch padding).

    In every window the ``n_best`` highest starts and ends are paired; a pair counts when both
    tokens are context tokens, the end is not before the start, the span has at most
    ``max_answer_length`` tokens and the start token has its maximum context in this window
    (:func:`max_context_masks`; a token shared by overlapping windows starts spans in one). Its score is start + end logit; the best across the windows
    wins. With ``allow_unanswerable`` (SQuAD v2.0) the answer is "" when the null score (CLS
    start + end, the lowest across windows) exceeds the best span's by more than
    ``null_score_diff_threshold``. Without it the answer is never "" while the context has a
    token: if no n-best pair is valid, every pair is searched.

    >>> ex = [{"id": "q1", "context": "in Paris today"}]
    >>> feats = {"example_id": ["q1"], "offsets": [[None, [0, 2], [3, 8], [9, 14], None]]}
    >>> decode_answers(ex, feats, [np.array([0, 0, 5, 1, 0.0])], [np.array([0, 0, 4, 1, 0.0])])
    {'q1': 'Paris'}
    """
    if not len(features["example_id"]) == len(start_logits) == len(end_logits):
        raise ValueError(
            f"one start and one end logit array per feature: {len(features['example_id'])} "
            f"features, {len(start_logits)} start and {len(end_logits)} end arrays"
        )
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, ex_id in enumerate(features["example_id"]):
        by_example[str(ex_id)].append(i)
    cls_indices = features.get("cls_index") or [0] * len(start_logits)

    predictions: dict[str, str] = {}
    for ex in examples:
        ex_id = str(ex["id"])
        windows = by_example.get(ex_id, [])
        logits = [
            (
                np.asarray(start_logits[i], dtype=np.float64)[: len(features["offsets"][i])],
                np.asarray(end_logits[i], dtype=np.float64)[: len(features["offsets"][i])],
            )
            for i in windows
        ]
        cls = [int(cls_indices[i]) for i in windows]
        best, null_score = _decode_example(
            logits,
            [features["offsets"][i] for i in windows],
            cls,
            n_best=n_best,
            max_len=max_answer_length,
            search_all=not allow_unanswerable,
        )
        if best is None or (
            allow_unanswerable and null_score - best[0] > null_score_diff_threshold
        ):
            predictions[ex_id] = ""
        else:
            (char_start, char_end) = best[1]
            predictions[ex_id] = str(ex["context"])[char_start:char_end]
    return predictions


def _decode_example(
    logits: Sequence[tuple[np.ndarray, np.ndarray]],
    offsets: Sequence[Sequence[Sequence[int] | None]],
    cls: Sequence[int],
    *,
    n_best: int,
    max_len: int,
    search_all: bool,
) -> tuple[tuple[float, Span] | None, float]:
    """The best span of one example's windows (``logits``: start and end per window, cut to
    its tokens) and its null score, the lowest CLS start + end across the windows. With
    ``search_all``, when no n-best pair is well-formed every pair is searched rather than
    answering nothing."""
    null_score = min(
        (float(s[c] + e[c]) for (s, e), c in zip(logits, cls, strict=True)), default=np.inf
    )
    best = _best_of_windows(logits, offsets, n_best=n_best, max_len=max_len)
    if best is None and search_all:
        best = _best_of_windows(logits, offsets, n_best=None, max_len=max_len)
    return best, null_score


def _best_of_windows(
    logits: Sequence[tuple[np.ndarray, np.ndarray]],
    offsets: Sequence[Sequence[Sequence[int] | None]],
    *,
    n_best: int | None,
    max_len: int,
) -> tuple[float, Span] | None:
    """The best-scoring valid span over one example's windows (in window order; the first of
    equal scores wins); ``n_best`` None pairs every start with every end."""
    in_context = [_in_context(o) for o in offsets]
    max_context = _max_context(offsets, in_context)
    best: tuple[float, Span] | None = None
    for (starts, ends), off, ok_in, starts_ok in zip(
        logits, offsets, in_context, max_context, strict=True
    ):
        span = _best_span(
            starts,
            ends,
            off,
            ok_in,
            starts_ok,
            n_best=len(off) if n_best is None else n_best,
            max_len=max_len,
        )
        if span is not None and (best is None or span[0] > best[0]):
            best = span
    return best


def max_context_masks(windows: Sequence[Sequence[Sequence[int] | None]]) -> list[np.ndarray]:
    """Per window of one example (its ``offsets``, in window order): which tokens have their
    maximum context there, the rule of transformers' ``_check_is_max_context``.

    A context token seen by several overlapping windows belongs to the window where
    min(tokens left of it, tokens right of it) + 0.01 * (context tokens of the window) is
    largest, the first such window on ties. Windows are placed in the document by matching the
    character offsets they share (a window's first context tokens are the previous window's
    last ones), so no column beyond ``offsets`` is needed. Non-context tokens are False.

    >>> a, b = [None, [0, 1], [2, 3], [4, 5]], [None, [2, 3], [4, 5], [6, 7]]
    >>> [m.tolist() for m in max_context_masks([a, b])]
    [[False, True, True, False], [False, False, True, True]]
    """
    return _max_context(windows, [_in_context(w) for w in windows])


def _in_context(offsets: Sequence[Sequence[int] | None]) -> np.ndarray:
    return np.fromiter((o is not None for o in offsets), dtype=bool, count=len(offsets))


def _max_context(
    windows: Sequence[Sequence[Sequence[int] | None]], in_context: Sequence[np.ndarray]
) -> list[np.ndarray]:
    if len(windows) < 2:
        return [m.copy() for m in in_context]  # one window: every context token is at home
    ctx = [np.flatnonzero(m) for m in in_context]
    starts = [0]
    for k in range(1, len(windows)):
        starts.append(starts[-1] + _shift(windows[k - 1], ctx[k - 1], windows[k], ctx[k]))
    masks = [np.zeros(len(w), dtype=bool) for w in windows]
    pos = np.concatenate([s + np.arange(len(c)) for s, c in zip(starts, ctx, strict=True)])
    score = np.concatenate(
        [np.minimum(np.arange(n), n - 1 - np.arange(n)) + 0.01 * n for n in map(len, ctx)]
    )
    window = np.concatenate([np.full(len(c), k) for k, c in enumerate(ctx)])
    order = np.lexsort((window, -score, pos))  # per document position: best score, first window
    first = np.ones(len(order), dtype=bool)
    first[1:] = pos[order][1:] != pos[order][:-1]
    home = np.zeros(len(order), dtype=bool)
    home[order[first]] = True
    at = 0
    for k, c in enumerate(ctx):
        masks[k][c] = home[at : at + len(c)]
        at += len(c)
    return masks


def _shift(prev: Any, prev_ctx: np.ndarray, cur: Any, cur_ctx: np.ndarray) -> int:
    """Context tokens of ``prev`` before ``cur``'s first one: the start of the longest suffix of
    ``prev`` that is a prefix of ``cur`` (by offsets), or all of them when none is shared."""
    if not len(cur_ctx):
        return len(prev_ctx)
    head = cur[cur_ctx[0]]
    for j, t in enumerate(prev_ctx):
        o = prev[t]
        if o[0] == head[0] and o[1] == head[1]:
            n = min(len(prev_ctx) - j, len(cur_ctx))
            if all(list(prev[prev_ctx[j + i]]) == list(cur[cur_ctx[i]]) for i in range(1, n)):
                return j
    return len(prev_ctx)


def _best_span(
    starts: np.ndarray,  # (T,)
    ends: np.ndarray,  # (T,)
    offsets: Sequence[Sequence[int] | None],
    in_context: np.ndarray,  # (T,) bool: context tokens
    starts_ok: np.ndarray,  # (T,) bool: context tokens a span may start at (max context)
    *,
    n_best: int,
    max_len: int,
) -> tuple[float, Span] | None:
    """The highest-scoring well-formed span among the top ``n_best`` starts x ends of one window."""
    top_s = np.argsort(-starts, kind="stable")[:n_best]  # (S,)
    top_e = np.argsort(-ends, kind="stable")[:n_best]  # (E,)
    length = top_e[None, :] - top_s[:, None] + 1  # (S, E) tokens in each span
    ok = starts_ok[top_s][:, None] & in_context[top_e][None, :] & (length >= 1)
    ok &= length <= max_len
    if not ok.any():
        return None
    scores = np.where(ok, starts[top_s][:, None] + ends[top_e][None, :], -np.inf)
    s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
    start_offset, end_offset = offsets[top_s[s]], offsets[top_e[e]]
    if start_offset is None or end_offset is None:  # cannot happen (ok[s, e]); narrows the type
        return None
    return float(scores[s, e]), (int(start_offset[0]), int(end_offset[1]))


# --------------------------------------------------------------------------- the kind


def doc_stride(max_length: int) -> tuple[int, int]:
    """(doc_stride, max_question_length) for QA windows of ``max_length`` tokens: XTREME's
    128 and 64 at its 384; scaled down for shorter windows so the context keeps room."""
    question = min(64, max_length // 4)
    room = max_length - 4 - question  # 4: the most special tokens a pair gets (XLM-R)
    return min(128, max(room // 2, 1)), question


class ExtractiveQA(Kind):
    name = "qa"
    auto_head = "AutoModelForQuestionAnswering"

    def featurize(
        self,
        task: TaskSpec,
        examples: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        max_length: int,
        split: str,
    ) -> Columns:
        stride, question = doc_stride(max_length)
        return featurize_qa(
            examples,
            tokenizer,
            max_length=max_length,
            doc_stride=stride,
            max_question_length=question,
            train=split == "train",
        )

    def keeps_examples(self, split: str) -> bool:
        return split != "train"  # decoding maps windows to examples

    def collate(
        self, feats: Features, idx: Sequence[int], *, pad_id: int, mlm: Any = None
    ) -> Batch:
        import torch

        out = collate_rows(feats, idx, pad_id=pad_id)
        for name in ("start_positions", "end_positions"):  # training windows
            if name in feats.columns:
                out[name] = torch.tensor([feats.columns[name][i] for i in idx], dtype=torch.long)
        return out

    def evaluate(
        self,
        ev: EvalContext,
        task: TaskSpec,
        feats: Features,
        lang: str,
        dev: Mapping[str, float],
    ) -> dict[str, float]:
        from raystilts.metrics import scores as metrics_lib

        starts: list[np.ndarray] = [np.empty(0)] * len(feats)
        ends: list[np.ndarray] = [np.empty(0)] * len(feats)
        for idx, _, out in ev.outputs(feats):
            s = out.start_logits.float().cpu().numpy()  # (B, T)
            e = out.end_logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                n = len(feats.input_ids[i])
                starts[i], ends[i] = s[row, :n], e[row, :n]
        windows = {"input_ids": feats.input_ids, **feats.columns}
        predictions = decode_answers(
            feats.examples, windows, starts, ends, allow_unanswerable=task.allow_unanswerable
        )
        answers = {str(ex["id"]): list(ex["answers"]["text"]) for ex in feats.examples}
        style = metrics_lib.qa_style(task.name)
        # XTREME scores XQuAD, MLQA and TyDiQA with v1.1 rules; SQuAD v2.0 keeps its own
        version: metrics_lib.SquadVersion = "v2.0" if task.allow_unanswerable else "v1.1"
        scores = metrics_lib.squad_scores(
            predictions, answers, lang=lang, style=style, version=version
        )
        return {k: float(v) for k, v in scores.items()}

    def fixture_task(self) -> TaskSpec:
        return made_up_task(
            "k_qa", self.name, "f1", max_length=64, score_metrics=("exact_match", "f1")
        )

    def fixture_examples(
        self, task: TaskSpec, split: str, lang: str, *, n: int
    ) -> list[dict[str, Any]]:
        rng = fixture_rng(task, split, lang)
        out = []
        for i in range(n):
            words = fixture_sentence(rng, rng.randint(8, 40))  # some contexts need two windows
            answer = words[len(words) // 2]
            start = len(" ".join(words[: len(words) // 2])) + 1
            answerable = not (task.allow_unanswerable and i % 3 == 0)
            out.append(
                {
                    "id": f"{lang}-{split}-{i}",
                    "context": " ".join(words),
                    "question": f"where is {answer}",
                    "answers": {
                        "text": [answer] if answerable else [],
                        "answer_start": [start] if answerable else [],
                    },
                }
            )
        return out


KIND = ExtractiveQA()
