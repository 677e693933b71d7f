"""Extractive QA featurization and span decoding (raystilts/data/qa.py), on real fast tokenizers.

Three tokenizer layouts: the tiny XLM-R (<s> q </s></s> c </s>, Unigram pieces, unknown runs
fused into one token), a WordPiece BERT (CLS q SEP c SEP, CJK characters split one by one)
and the same BERT padding on the left, which puts the context first.
"""

# ruff: noqa: RUF001  (real CJK text uses fullwidth punctuation, which tokenizers must handle)

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raystilts.data.qa import decode_answers, featurize_qa


def qa(ex_id: str, question: str, context: str, *answers: str) -> dict[str, Any]:
    """A canonical QA example whose answers are found in the context (first occurrence)."""
    starts = [context.index(a) for a in answers]
    return {
        "id": ex_id,
        "question": question,
        "context": context,
        "answers": {"text": list(answers), "answer_start": starts},
    }


# answers that start and end on a word (space or punctuation) boundary: every tokenizer here
# can point at them exactly
EXAMPLES = [
    qa(
        "en",
        "What is the capital of France?",
        "The capital of France is Paris, on the Seine.",
        "Paris",
    ),
    qa("de", "Wo liegt München?", "München liegt in Bayern, im Süden Deutschlands.", "Bayern"),
    qa("ar", "ما هي عاصمة مصر؟", "عاصمة مصر هي القاهرة وهي مدينة كبيرة.", "القاهرة"),
    qa("zh", "中国的首都是哪里？", "中国的首都是 北京 ，人口很多。", "北京"),
    qa("ru", "Где находится Кремль?", "Кремль находится в Москве , в центре города.", "в Москве"),
    qa("hi", "भारत की राजधानी क्या है?", "भारत की राजधानी नई दिल्ली है।", "नई दिल्ली"),
    qa("multi", "Who wrote it?", "It was written by Ada Lovelace in 1843.", "Ada Lovelace", "Ada"),
    qa("start", "Which city?", "Lisbon is the capital of Portugal.", "Lisbon"),
]
# unsegmented CJK: only a tokenizer that splits CJK characters can point at the answer exactly
CJK = [
    qa("zh-raw", "中国的首都是哪里？", "中华人民共和国的首都是北京，人口很多。", "北京"),
    qa("ja-raw", "日本の首都はどこですか？", "日本の首都は東京です。", "東京"),
]
UNANSWERABLE: dict[str, Any] = {
    "id": "none",
    "question": "What is the capital of Atlantis?",
    "context": "Atlantis is a legendary island mentioned by Plato.",
    "answers": {"text": [], "answer_start": []},
}


def _bert(padding_side: str) -> Any:
    from transformers import BertTokenizer

    # specials only: every word is one [UNK] spanning the word, CJK characters are split apart
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    return BertTokenizer(vocab=vocab, padding_side=padding_side)


@pytest.fixture(scope="module")
def xlmr(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@pytest.fixture(scope="module", params=["xlmr", "bert", "bert-left"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    if request.param == "xlmr":
        return request.getfixturevalue("xlmr")
    return _bert("left" if request.param == "bert-left" else "right")


def _examples_for(tokenizer: Any) -> list[dict[str, Any]]:
    fused_unknowns = type(tokenizer).__name__.startswith("XLMRoberta")
    return EXAMPLES if fused_unknowns else EXAMPLES + CJK


def _span_text(ex: dict[str, Any], offsets: list[Any], start: int, end: int) -> str:
    return str(ex["context"][offsets[start][0] : offsets[end][1]])


def _windows(
    examples: list[dict[str, Any]], tokenizer: Any, **kw: Any
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    train = featurize_qa(examples, tokenizer, train=True, **kw)
    evals = featurize_qa(examples, tokenizer, train=False, **kw)
    return train, evals


def test_train_positions_point_exactly_at_the_first_answer(tokenizer: Any) -> None:
    examples = _examples_for(tokenizer)
    train, evals = _windows(examples, tokenizer, max_length=128, doc_stride=16)
    by_id = {ex["id"]: ex for ex in examples}
    assert evals["example_id"] == [ex["id"] for ex in examples]  # short: one window each
    assert train["input_ids"] == evals["input_ids"]
    for i, ex_id in enumerate(evals["example_id"]):
        ex, offsets = by_id[ex_id], evals["offsets"][i]
        start, end = train["start_positions"][i], train["end_positions"][i]
        assert start != evals["cls_index"][i], ex_id
        assert offsets[start] is not None and offsets[end] is not None and start <= end
        assert _span_text(ex, offsets, start, end) == ex["answers"]["text"][0], ex_id


def test_eval_offsets_mark_only_context_tokens(tokenizer: Any) -> None:
    ex = EXAMPLES[0]
    evals = featurize_qa([ex], tokenizer, max_length=128, doc_stride=16, train=False)
    (offsets,) = evals["offsets"]
    (ids,) = evals["input_ids"]
    assert len(offsets) == len(ids)
    context_tokens = [i for i, o in enumerate(offsets) if o is not None]
    assert ids[evals["cls_index"][0]] == tokenizer.cls_token_id
    assert evals["cls_index"] == [0]  # every layout here keeps CLS first
    # the context tokens are one contiguous run that covers the context from its first character
    assert context_tokens == list(range(context_tokens[0], context_tokens[-1] + 1))
    assert offsets[context_tokens[0]][0] == 0
    assert offsets[context_tokens[-1]][1] == len(ex["context"])
    # the context comes second unless the tokenizer pads on the left
    question_first = tokenizer.padding_side == "right"
    assert (context_tokens[0] > 2) == question_first


def test_unanswerable_points_at_cls_in_every_window(tokenizer: Any) -> None:
    long = dict(UNANSWERABLE, context=" ".join([UNANSWERABLE["context"]] * 8))
    train = featurize_qa(
        [UNANSWERABLE, long],
        tokenizer,
        max_length=40,
        doc_stride=8,
        train=True,
        max_question_length=12,
    )
    assert len(train["input_ids"]) > 2  # the long one has several windows
    assert set(train["start_positions"]) == {0}
    assert set(train["end_positions"]) == {0}


def test_long_context_windows_overlap_by_the_stride(tokenizer: Any) -> None:
    filler = "Many other towns line the river and its valley . " * 6
    context = filler + "The old bridge stands in Coimbra today . " + filler.strip()
    ex = qa("long", "Where is the bridge?", context, "Coimbra")
    stride = 6
    train, evals = _windows(
        [ex], tokenizer, max_length=40, doc_stride=stride, max_question_length=12
    )
    n = len(evals["input_ids"])
    assert n >= 4
    assert all(len(ids) <= 40 for ids in evals["input_ids"])
    spans = [[tuple(o) for o in offs if o is not None] for offs in evals["offsets"]]
    for left, right in pairwise(spans):
        assert left[-stride:] == right[:stride]  # consecutive windows share `stride` context tokens
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(ex["context"])  # together: all of it
    start_char = ex["answers"]["answer_start"][0]
    end_char = start_char + len("Coimbra")
    hits = 0
    for i, offs in enumerate(evals["offsets"]):
        s, e = train["start_positions"][i], train["end_positions"][i]
        holds = spans[i][0][0] <= start_char and spans[i][-1][1] >= end_char
        if holds:
            hits += 1
            assert _span_text(ex, offs, s, e) == "Coimbra"
        else:
            assert (s, e) == (0, 0)
    assert hits >= 1


def test_long_question_is_clipped_so_the_context_keeps_room(xlmr: Any) -> None:
    ex = qa("q", "why " * 200 + "?", "Because the river is wide here .", "the river")
    train = featurize_qa(
        [ex], xlmr, max_length=48, doc_stride=4, train=True, max_question_length=10
    )
    assert len(train["input_ids"]) >= 1 and all(len(x) <= 48 for x in train["input_ids"])
    assert any(s != 0 for s in train["start_positions"])


def test_stride_that_leaves_no_room_is_refused(xlmr: Any) -> None:
    with pytest.raises(ValueError, match="doc_stride=128"):
        featurize_qa(EXAMPLES, xlmr, max_length=64, doc_stride=128, train=True)


def test_no_examples_give_empty_columns(xlmr: Any) -> None:
    assert featurize_qa([], xlmr, max_length=64, doc_stride=8, train=False) == {
        "input_ids": [],
        "example_id": [],
        "offsets": [],
        "cls_index": [],
    }


# ---- decoding -------------------------------------------------------------------------------


def _gold_logits(train: dict[str, list[Any]], *, pad: int = 0) -> tuple[list[Any], list[Any]]:
    """Logits that peak at each window's gold positions, plus `pad` batch-padding entries that
    would win if decoding read them."""
    starts, ends = [], []
    for ids, s, e in zip(
        train["input_ids"], train["start_positions"], train["end_positions"], strict=True
    ):
        st, en = np.zeros(len(ids) + pad), np.zeros(len(ids) + pad)
        st[s], en[e] = 10.0, 10.0
        st[len(ids) :], en[len(ids) :] = 100.0, 100.0
        starts.append(st)
        ends.append(en)
    return starts, ends


def test_round_trip_gold_logits_decode_to_the_gold_text(tokenizer: Any) -> None:
    filler = "Many other towns line the river and its valley . " * 6
    examples = [
        *_examples_for(tokenizer),
        qa("long", "Where?", filler + "It is in Coimbra now . " + filler, "Coimbra"),
    ]
    # the overlap (20) is longer than every answer, so each answer lies whole in some window
    train, evals = _windows(
        examples, tokenizer, max_length=64, doc_stride=20, max_question_length=16
    )
    assert len(evals["input_ids"]) > len(examples)
    starts, ends = _gold_logits(train, pad=5)
    preds = decode_answers(examples, evals, starts, ends)
    assert preds == {ex["id"]: ex["answers"]["text"][0] for ex in examples}


def _feature(ex_id: str, n: int, *, context_from: int = 2) -> tuple[str, list[Any]]:
    """A made-up window: tokens [0, context_from) are CLS/question, then one token per character."""
    return ex_id, [None] * context_from + [[c, c + 1] for c in range(n - context_from)]


CONTEXT = "abcdefghijklmnopqrstuvwxyz"


def _features(*windows: tuple[str, list[Any]]) -> dict[str, list[Any]]:
    return {"example_id": [w[0] for w in windows], "offsets": [w[1] for w in windows]}


def _logits(n: int, peaks: dict[int, float]) -> np.ndarray:
    x = np.zeros(n)
    for i, v in peaks.items():
        x[i] = v
    return x


def test_best_span_wins_across_windows() -> None:
    ex = {"id": "x", "context": CONTEXT}
    # window 1 covers characters 0..9, window 2 characters 8..17 (its token 2 is character 8)
    w1 = ("x", [None, None] + [[c, c + 1] for c in range(10)])
    w2 = ("x", [None, None] + [[c, c + 1] for c in range(8, 18)])
    feats = _features(w1, w2)
    starts = [_logits(12, {3: 4.0}), _logits(12, {5: 6.0})]
    ends = [_logits(12, {4: 4.0}), _logits(12, {7: 6.0})]
    assert decode_answers([ex], feats, starts, ends) == {"x": CONTEXT[11:14]}  # "lmn"


def test_spans_outside_the_context_or_reversed_are_skipped() -> None:
    ex = {"id": "x", "context": CONTEXT}
    feats = _features(_feature("x", 12))
    # the best start is a question token, the best end lies before the next start
    starts = [_logits(12, {1: 9.0, 6: 5.0})]
    ends = [_logits(12, {3: 8.0, 7: 4.0})]
    assert decode_answers([ex], feats, starts, ends) == {"x": CONTEXT[4:6]}


def test_max_answer_length_is_respected() -> None:
    ex = {"id": "x", "context": CONTEXT}
    feats = _features(_feature("x", 20))
    starts = [_logits(20, {2: 9.0})]
    ends = [_logits(20, {15: 9.0, 4: 3.0})]  # 14 tokens beats 3 tokens on score
    assert decode_answers([ex], feats, starts, ends) == {"x": CONTEXT[0:14]}
    assert decode_answers([ex], feats, starts, ends, max_answer_length=5) == {"x": CONTEXT[0:3]}


def test_squad_v2_null_answer_and_threshold() -> None:
    ex = {"id": "x", "context": CONTEXT}
    feats = _features(_feature("x", 10))
    starts = [_logits(10, {0: 6.0, 3: 2.0})]
    ends = [_logits(10, {0: 6.0, 4: 2.0})]  # null 12 vs best span 4
    kw: dict[str, Any] = {"allow_unanswerable": True}
    assert decode_answers([ex], feats, starts, ends, **kw) == {"x": ""}
    assert decode_answers([ex], feats, starts, ends, **kw, null_score_diff_threshold=8.0) == {
        "x": CONTEXT[1:3]
    }
    # without unanswerable questions the best span is given, however strong the null score
    assert decode_answers([ex], feats, starts, ends) == {"x": CONTEXT[1:3]}


def test_null_score_is_the_lowest_across_windows() -> None:
    ex = {"id": "x", "context": CONTEXT}
    feats = _features(_feature("x", 10), _feature("x", 10))
    starts = [_logits(10, {0: 9.0, 3: 4.0}), _logits(10, {0: 1.0})]
    ends = [_logits(10, {0: 9.0, 4: 4.0}), _logits(10, {0: 1.0})]
    # window 1 alone would say "no answer" (18 > 8); window 2's null score 2 is the one compared
    assert decode_answers([ex], feats, starts, ends, allow_unanswerable=True) == {"x": CONTEXT[1:3]}


def test_never_empty_without_unanswerable_even_when_no_n_best_pair_is_valid() -> None:
    ex = {"id": "x", "context": CONTEXT}
    feats = _features(_feature("x", 10))
    starts = [_logits(10, {1: 9.0, 7: 1.0})]  # the single best start is a question token
    ends = [_logits(10, {0: 9.0, 8: 1.0})]
    assert decode_answers([ex], feats, starts, ends, n_best=1) == {"x": CONTEXT[5:7]}
    assert decode_answers([ex], feats, starts, ends, n_best=1, allow_unanswerable=True) == {"x": ""}


def test_logit_count_must_match_features() -> None:
    feats = _features(_feature("x", 10))
    with pytest.raises(ValueError, match="1 features, 0 start"):
        decode_answers([{"id": "x", "context": CONTEXT}], feats, [], [])


def _reference_decode(
    examples: list[dict[str, Any]],
    feats: dict[str, list[Any]],
    starts: list[np.ndarray],
    ends: list[np.ndarray],
    *,
    n_best: int,
    max_answer_length: int,
    allow_unanswerable: bool,
) -> dict[str, str]:
    """The Hugging Face ``postprocess_qa_predictions`` loop, written out plainly (no fallback),
    with the max-context check of transformers' ``compute_predictions_logits`` (which XTREME's
    ``run_squad.py`` uses); here each token is one character, so its document position is its
    start offset."""
    out = {}
    for ex in examples:
        candidates, null = [], None
        mine = [i for i, ex_id in enumerate(feats["example_id"]) if ex_id == ex["id"]]
        spans = []  # (first document position, context tokens) per window
        for i in mine:
            ctx = [o[0] for o in feats["offsets"][i] if o is not None]
            spans.append((ctx[0], len(ctx)))

        def home(position: int, spans: list[tuple[int, int]] = spans) -> int:
            # transformers' _check_is_max_context, plainly
            best, best_k = None, None
            for k, (first, length) in enumerate(spans):
                if first <= position <= first + length - 1:
                    score = min(position - first, first + length - 1 - position) + 0.01 * length
                    if best is None or score > best:
                        best, best_k = score, k
            return best_k  # type: ignore[return-value]

        for k, i in enumerate(mine):
            offs = feats["offsets"][i]
            s_log, e_log = starts[i][: len(offs)], ends[i][: len(offs)]
            if null is None or s_log[0] + e_log[0] < null:
                null = s_log[0] + e_log[0]
            for s in np.argsort(s_log)[-1 : -n_best - 1 : -1]:
                for e in np.argsort(e_log)[-1 : -n_best - 1 : -1]:
                    if offs[s] is None or offs[e] is None:
                        continue
                    if home(offs[s][0]) != k:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    text = ex["context"][offs[s][0] : offs[e][1]]
                    candidates.append((s_log[s] + e_log[e], text))
        best = max(candidates) if candidates else (-np.inf, "")
        out[ex["id"]] = (
            "" if allow_unanswerable and null is not None and null > best[0] else best[1]
        )
    return out


@pytest.mark.parametrize("allow_unanswerable", [False, True])
def test_decoding_agrees_with_the_reference_loop_on_random_logits(allow_unanswerable: bool) -> None:
    rng = np.random.default_rng(0)
    examples, windows = [], []
    for k in range(40):
        ex_id = f"e{k}"
        examples.append({"id": ex_id, "context": CONTEXT})
        # consecutive windows over the context, each sharing 0-3 characters with the previous
        # one, as featurize_qa makes them
        first = int(rng.integers(0, 8))
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(3, 9))
            if first + n > len(CONTEXT):
                break
            question = int(rng.integers(1, 4))
            offs = [None] * question + [[c, c + 1] for c in range(first, first + n)]
            windows.append((ex_id, [*offs, None]))
            first += n - int(rng.integers(0, min(4, n)))
    feats = _features(*windows)
    # padded like a batch: the tail past each window's length must not count
    starts = [rng.normal(size=len(w[1]) + 3) for w in windows]
    ends = [rng.normal(size=len(w[1]) + 3) for w in windows]
    for n_best, max_len in [(20, 30), (3, 4), (5, 2)]:
        kw: dict[str, Any] = {"n_best": n_best, "max_answer_length": max_len}
        got = decode_answers(
            examples, feats, starts, ends, allow_unanswerable=allow_unanswerable, **kw
        )
        want = _reference_decode(
            examples, feats, starts, ends, allow_unanswerable=allow_unanswerable, **kw
        )
        if allow_unanswerable:
            assert got == want
        else:  # the reference answers "" where no n-best pair is valid; decode_answers searches on
            assert all(got[k] == v for k, v in want.items() if v)
            assert all(got.values())


def test_eval_features_survive_an_arrow_round_trip(tokenizer: Any) -> None:
    import datasets

    examples = _examples_for(tokenizer)
    evals = featurize_qa(
        examples, tokenizer, max_length=40, doc_stride=4, train=False, max_question_length=8
    )
    table = datasets.Dataset.from_dict(evals).data
    back = {name: table.column(name).to_pylist() for name in evals}
    assert back == evals
