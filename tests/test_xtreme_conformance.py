"""Scores that match the benchmarks' own code, case for case (issue 13).

Each reference answer below is a constant with its source: the file and function of
google-research/xtreme (or of the transformers code it imports) whose result it is. Their code is
not copied here; where a test needs a reference computation it is written out plainly from the
rule the named function implements.

Items and their tests:

1. QA decoding across windows (max-context rule): ``test_qa_span_start_must_have_max_context``,
   ``test_max_context_masks_on_real_windows``; random logits against a reference loop with the
   rule: ``tests/test_qa.py::test_decoding_agrees_with_the_reference_loop_on_random_logits``.
2. BUCC with repeated sentences: ``test_bucc_repeated_source_text_is_dropped``,
   ``test_bucc_unique_text_mining_on_random_cases``, ``test_retrieval_features_keep_the_text``.
3. SQuAD v1.1 conventions: ``test_squad_v11_minimal_cases``, ``test_squad_v11_random_cases``,
   ``test_squad_version_by_task``.
4. UDPOS scoring: ``test_udpos_default_is_seqeval0_reading``.
5. XTREME-R's XQuAD languages: ``test_xtreme_r_xquad_has_romanian``.
6. Segment ids: ``test_segment_ids_reach_features_for_bert_tokenizers``,
   ``test_segment_ids_change_a_bert_qa_model``.
7. Best checkpoint on English dev: ``test_best_checkpoint_keeps_one_copy``,
   ``test_runner_reports_the_best_english_dev_checkpoint``, ``test_space_checkpoint_key``.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raystilts.core.languages import BENCHMARK_LANGUAGES
from raystilts.metrics import bucc_candidates, bucc_scores, normalize_answer, squad_scores
from raystilts.qa import decode_answers, featurize_qa, max_context_masks
from raystilts.tasks import CATALOG
from raystilts.train.checkpointing import BestCheckpoint

# --------------------------------------------------------------------------------------------
# 1. QA decoding across windows

# transformers ``data/processors/squad.py::_new_check_is_max_context`` marks, per window, the
# tokens whose max context is there; ``data/metrics/squad_metrics.py::compute_predictions_logits``
# (called by xtreme ``third_party/run_squad.py``) skips a start index that is not marked. On the
# issue's minimal input that gives:
XTREME_TWO_WINDOW_ANSWER = "charlie delta echo foxtrot"
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _word_offsets(context: str) -> list[list[int]]:
    out, at = [], 0
    for w in context.split():
        at = context.index(w, at)
        out.append([at, at + len(w)])
        at += len(w)
    return out


def test_qa_span_start_must_have_max_context() -> None:
    context = " ".join(WORDS)
    words = _word_offsets(context)
    # [CLS] [question] words... [SEP]: window 0 holds words 0-5, window 1 words 2-7
    w0 = [None, None, *words[0:6], None]
    w1 = [None, None, *words[2:8], None]
    feats = {"example_id": ["q", "q"], "offsets": [w0, w1]}
    s0, s1 = np.zeros(9), np.zeros(9)
    s0[2 + 5] = 5.0  # foxtrot, the last word of window 0
    s1[2 + 3] = 3.5  # foxtrot in window 1
    s0[2 + 2] = s1[2 + 0] = 3.0  # charlie in both
    got = decode_answers([{"id": "q", "context": context}], feats, [s0, s1], [s0, s1])
    assert got == {"q": XTREME_TWO_WINDOW_ANSWER}
    # without the rule the answer would be "foxtrot" (5 + 5 in window 0): the rule decides here
    masks = max_context_masks([w0, w1])
    assert not masks[0][2 + 5] and masks[1][2 + 3]  # foxtrot's home is window 1
    assert masks[0][2 + 2] and not masks[1][2 + 0]  # charlie's home is window 0


def _reference_homes(windows: list[list[Any]]) -> list[list[bool]]:
    """transformers' rule written out: document positions from the (unique) word offsets."""
    order = sorted({tuple(o) for w in windows for o in w if o is not None})
    position = {o: i for i, o in enumerate(order)}
    spans = []
    for w in windows:
        ctx = [position[tuple(o)] for o in w if o is not None]
        spans.append((ctx[0], len(ctx)))

    def home(p: int) -> int:
        best, best_k = -1.0, -1
        for k, (start, length) in enumerate(spans):
            if start <= p <= start + length - 1:
                score = min(p - start, start + length - 1 - p) + 0.01 * length
                if score > best:
                    best, best_k = score, k
        return best_k

    return [
        [o is not None and home(position[tuple(o)]) == k for o in w] for k, w in enumerate(windows)
    ]


@pytest.mark.parametrize("stride", [0, 1, 3, 5])
def test_max_context_masks_on_real_windows(stride: int) -> None:
    from transformers import BertTokenizer

    # specials only: every word is one [UNK] token with its own offsets
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    tok = BertTokenizer(vocab=vocab)
    rng = random.Random(stride)
    examples = [
        {
            "id": f"e{k}",
            "question": "which word ?",
            "context": " ".join(f"w{rng.randint(0, 999)}x{i}" for i in range(rng.randint(3, 40))),
        }
        for k in range(20)
    ]
    feats = featurize_qa(
        examples, tok, max_length=16, doc_stride=stride, train=False, max_question_length=4
    )
    multi = 0
    for ex in examples:
        windows = [
            o for o, i in zip(feats["offsets"], feats["example_id"], strict=True) if i == ex["id"]
        ]
        multi += len(windows) > 1
        got = [m.tolist() for m in max_context_masks(windows)]
        assert got == _reference_homes(windows)
    assert multi >= 10  # the case under test is common here


# --------------------------------------------------------------------------------------------
# 2. BUCC with repeated sentences

# xtreme ``third_party/utils_retrieve.py``: ``mine_bitext`` mines over unique texts
# (``text_load_unify``), ``read_sent2id`` drops the ids of a text seen twice, and ``bucc_eval``
# then scores the minimal input (two 'ein Satz' sources, gold (de-1, en-1)) with
XTREME_BUCC_REPEATED_F1 = 0.0


def test_bucc_repeated_source_text_is_dropped() -> None:
    src = np.array([[1.0, 0.0], [1.0, 0.0]])
    tgt = np.array([[1.0, 0.1]])
    gold = {("de-1", "en-1")}
    args = (src, ["de-1", "de-2"], tgt, ["en-1"], gold)
    texts = {"src_texts": ["ein Satz", "ein Satz"], "tgt_texts": ["a sentence"]}
    assert bucc_scores(*args, **texts)["f1"] == XTREME_BUCC_REPEATED_F1
    assert bucc_scores(*args)["f1"] == 1.0  # ids taken as unique sentences: the old answer


@pytest.mark.parametrize("seed", range(5))
def test_bucc_unique_text_mining_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_src, n_tgt = 30, 25
    src_texts = [f"s{int(rng.integers(0, 22))}" for _ in range(n_src)]  # repeats on purpose
    tgt_texts = [f"t{int(rng.integers(0, 20))}" for _ in range(n_tgt)]
    base = {t: rng.normal(size=8) for t in {*src_texts, *tgt_texts}}
    # one embedding per text (plus noise on the copies: XTREME keeps the last occurrence's)
    src = np.stack([base[t] + 1e-3 * rng.normal(size=8) for t in src_texts])
    tgt = np.stack([base[t] + 1e-3 * rng.normal(size=8) for t in tgt_texts])
    src_ids = [f"de-{i}" for i in range(n_src)]
    tgt_ids = [f"en-{i}" for i in range(n_tgt)]
    got = bucc_candidates(src, src_ids, tgt, tgt_ids, src_texts=src_texts, tgt_texts=tgt_texts)

    # reference, the XTREME way: unique texts in first-seen order, the last occurrence's row,
    # mine over them, then map texts to ids, dropping texts seen twice
    def unify(texts: list[str]) -> tuple[list[int], dict[str, str]]:
        last = {t: i for i, t in enumerate(texts)}
        first_order = list(dict.fromkeys(texts))
        counts = Counter(texts)
        return [last[t] for t in first_order], {
            t: f"{i}" for t, i in last.items() if counts[t] == 1
        }

    s_rows, s_keep = unify(src_texts)
    t_rows, t_keep = unify(tgt_texts)
    mined = bucc_candidates(
        src[s_rows], [src_texts[i] for i in s_rows], tgt[t_rows], [tgt_texts[i] for i in t_rows]
    )
    want = {
        (src_ids[int(s_keep[s])], tgt_ids[int(t_keep[t])]): v
        for (s, t), v in mined.items()
        if s in s_keep and t in t_keep
    }
    assert got == want
    assert any(c > 1 for c in Counter(src_texts).values())


def test_retrieval_features_keep_the_text(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from raystilts.data import featurize

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    rows = [
        {"role": "query", "id": "de-1", "text": " ein Satz ", "gold": ["en-1"]},
        {"role": "candidate", "id": "en-1", "text": "a sentence", "gold": []},
    ]
    cols = featurize(CATALOG["bucc"], rows, tok, max_length=16)
    assert cols["text"] == ["ein Satz", "a sentence"]  # stripped, as read_sent2id compares


# --------------------------------------------------------------------------------------------
# 3. SQuAD v1.1 conventions for XQuAD, MLQA and TyDiQA

# xtreme ``third_party/evaluate_squad.py`` (SQuAD v1.1's ``exact_match_score``, ``f1_score``,
# ``metric_max_over_ground_truths``) and ``third_party/evaluate_mlqa.py`` (same rules, MLQA's
# normalisation), as fractions:
XTREME_V11_THE_VS_A = {"exact_match": 1.0, "f1": 0.0}  # golds ["the"], prediction "a"
XTREME_V11_PARIS_THE_VS_A_EM = 1.0  # golds ["Paris", "the"], prediction "a"
XTREME_MLQA_HI_DANDA_F1 = 0.0  # MLQA hi, golds ["।"], prediction "।"


def test_squad_v11_minimal_cases() -> None:
    assert squad_scores({"q": "a"}, {"q": ["the"]}, version="v1.1") == XTREME_V11_THE_VS_A
    out = squad_scores({"q": "a"}, {"q": ["Paris", "the"]}, version="v1.1")
    assert out["exact_match"] == XTREME_V11_PARIS_THE_VS_A_EM
    hi = squad_scores({"q": "।"}, {"q": ["।"]}, lang="hi", style="mlqa", version="v1.1")
    assert hi["f1"] == XTREME_MLQA_HI_DANDA_F1 and hi["exact_match"] == 1.0
    # SQuAD v2.0 keeps v2.0's rules (evaluate-v2.0.py): empty-normalising golds are dropped
    assert squad_scores({"q": "a"}, {"q": ["the"]}) == {"exact_match": 1.0, "f1": 1.0}
    assert squad_scores({"q": "a"}, {"q": ["Paris", "the"]})["exact_match"] == 0.0
    with pytest.raises(ValueError, match=r"v2\.0"):
        squad_scores({"q": ""}, {"q": []}, version="v1.1")  # v1.1 has no unanswerable questions


def _v11_reference(pred: str, golds: list[str], lang: str, style: Any) -> tuple[float, float]:
    """The v1.1 script's rules written out: max over every gold answer of EM and token F1."""

    def f1(p: list[str], g: list[str]) -> float:
        same = sum((Counter(p) & Counter(g)).values())
        return 0.0 if same == 0 else 2 * same / (len(p) + len(g))

    p = normalize_answer(pred, lang=lang, style=style)
    gs = [normalize_answer(g, lang=lang, style=style) for g in golds]
    return max(float(p == g) for g in gs), max(f1(p.split(), g.split()) for g in gs)


@pytest.mark.parametrize(("lang", "style"), [("en", "squad"), ("hi", "mlqa"), ("es", "mlqa")])
def test_squad_v11_random_cases(lang: str, style: Any) -> None:
    rng = random.Random(lang)
    words = ["the", "a", "an", "el", "la", "Paris", "cat", "।", "!", "red", "de", ""]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 3)))

    preds = {f"q{i}": text() for i in range(200)}
    golds = {q: [text() for _ in range(rng.randint(1, 3))] for q in preds}
    got = squad_scores(preds, golds, lang=lang, style=style, version="v1.1")
    ref = [_v11_reference(preds[q], golds[q], lang, style) for q in preds]
    assert got["exact_match"] == pytest.approx(sum(r[0] for r in ref) / 200, abs=1e-15)
    assert got["f1"] == pytest.approx(sum(r[1] for r in ref) / 200, abs=1e-15)


def test_squad_version_by_task() -> None:
    # the runner scores a QA task with v2.0 rules exactly when it has unanswerable questions
    assert CATALOG["squad_v2"].allow_unanswerable
    for name in ("xquad", "xquad_r", "mlqa", "tydiqa", "squad_v1"):
        assert not CATALOG[name].allow_unanswerable, name


# --------------------------------------------------------------------------------------------
# 4. UDPOS scoring

# xtreme ``evaluate_test.py`` (commit f0a334a): TASK2AVG_SCORES['udpos']['avg_f1'] on its mock
# data, which only seqeval 0.0.x's reading of POS tags reproduces (seqeval >= 1.0's gives
# 70.39806, the measurement). Recorded here as the reason for the default:
XTREME_UDPOS_MOCK_AVG_F1 = 70.21746048354693


def test_udpos_default_is_seqeval0_reading() -> None:
    from raystilts.core.space import TrainingSettings
    from raystilts.metrics import tagging_scores
    from raystilts.train.runner import TrainSettings

    assert TrainSettings().pos_scheme == "pos-seqeval0"
    assert TrainingSettings().pos_scheme == "pos-seqeval0"
    # where the readings differ: CCONJ next to SCONJ (seqeval >= 1.0 types both as 'CONJ')
    gold, pred = [["CCONJ", "SCONJ", "NOUN"]], [["CCONJ", "ADP", "NOUN"]]
    assert tagging_scores(gold, pred, scheme="pos-seqeval0")["f1"] == pytest.approx(2 / 3)
    assert tagging_scores(gold, pred, scheme="pos")["f1"] == pytest.approx(0.4)  # seqeval 1.2
    assert XTREME_UDPOS_MOCK_AVG_F1 < 70.39806  # the two readings' published/issue figures


# --------------------------------------------------------------------------------------------
# 5. XTREME-R's XQuAD languages

# xtreme ``evaluate.py``, XTREME-R's task-to-languages list for XQuAD (as the issue reports it;
# XQuAD's own release added Romanian):
XTREME_R_XQUAD = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")


def test_xtreme_r_xquad_has_romanian() -> None:
    assert sorted(BENCHMARK_LANGUAGES["xtreme_r"]["xquad"]) == list(XTREME_R_XQUAD)
    assert sorted(CATALOG["xquad_r"].languages) == list(XTREME_R_XQUAD)
    assert "ro" not in CATALOG["xquad"].languages  # XTREME's XQuAD stays at 11


# --------------------------------------------------------------------------------------------
# 6. Segment ids


def _bert_tokenizer() -> Any:
    from transformers import BertTokenizer

    words = ["what", "is", "the", "capital", "of", "france", "paris", "a", "b", "c"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


QA_EXAMPLE = {
    "id": "q",
    "question": "what is the capital of france",
    "context": "paris is the capital of france",
    "answers": {"text": ["paris"], "answer_start": [0]},
}


def test_segment_ids_reach_features_for_bert_tokenizers(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from raystilts.data import featurize

    bert = _bert_tokenizer()
    for split in ("train", "dev"):
        cols = featurize(CATALOG["squad_v1"], [QA_EXAMPLE], bert, max_length=32, split=split)
        want = bert(QA_EXAMPLE["question"], QA_EXAMPLE["context"])["token_type_ids"]
        assert cols["token_type_ids"] == [want] and set(want) == {0, 1}
    pair = {"text": ["what is a", "paris is b"], "label": 0}
    cols = featurize(CATALOG["mnli"], [pair], bert, max_length=32)
    assert set(cols["token_type_ids"][0]) == {0, 1}
    choice = {"context": "what is a", "choices": ["paris", "b", "c", "a"], "label": 0}
    cols = featurize(CATALOG["hellaswag"], [choice], bert, max_length=32)
    assert all(set(c) == {0, 1} for c in cols["token_type_ids"][0])
    # XLM-R's tokenizer makes none: no column, and nothing is invented for it
    xlmr = AutoTokenizer.from_pretrained(str(tiny_model))
    cols = featurize(CATALOG["squad_v1"], [QA_EXAMPLE], xlmr, max_length=32, split="dev")
    assert "token_type_ids" not in cols


def test_segment_ids_change_a_bert_qa_model() -> None:
    from transformers import BertConfig, BertForQuestionAnswering

    from raystilts.data import Features, collate

    bert = _bert_tokenizer()
    cols = featurize_qa([QA_EXAMPLE], bert, max_length=32, doc_stride=4, train=False)
    feats = Features(
        kind="qa",
        input_ids=cols.pop("input_ids"),
        labels=[],
        columns=cols,
        examples=[QA_EXAMPLE],
    )
    batch = collate(feats, [0], pad_id=0)
    assert batch["token_type_ids"].tolist() == [cols["token_type_ids"][0]]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(bert), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    model = BertForQuestionAnswering(config).eval()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        with_ids = model(**inputs).start_logits
        without = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert not torch.allclose(with_ids, without.start_logits)  # the ids matter to BERT


# --------------------------------------------------------------------------------------------
# 7. Best checkpoint on English dev


def test_best_checkpoint_keeps_one_copy() -> None:
    model = torch.nn.Linear(4, 2)
    best = BestCheckpoint()
    assert not best.restore(model) and best.step is None
    scores = [0.3, 0.5, 0.5, 0.2, float("nan"), 0.4]
    pointers: set[int] = set()
    for step, score in enumerate(scores, start=1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        best.consider(step, score, model)
        pointers |= {t.data_ptr() for t in best._state.values()}  # type: ignore[union-attr]
    assert len(pointers) == 2  # weight and bias: allocated once, overwritten in place
    assert best.step == 2 and best.score == 0.5  # ties keep the earlier step; NaN never wins
    assert best.restore(model) and float(model.weight[0, 0]) == 2.0


def test_space_checkpoint_key() -> None:
    from raystilts.core.errors import UserError
    from raystilts.core.space import load_space_dict

    base: dict[str, Any] = {"name": "t", "model": "embedded", "targets": ["mini_xnli"]}
    base["intermediate"] = {"tasks": ["mini_mnli"]}
    assert load_space_dict(base, catalog=CATALOG).training.checkpoint == "best_en_dev"
    training = {"checkpoint": "last", "pos_scheme": "pos"}
    last = load_space_dict({**base, "training": training}, catalog=CATALOG)
    assert (last.training.checkpoint, last.training.pos_scheme) == ("last", "pos")
    with pytest.raises(UserError, match=r"training\.checkpoint: .*best_en_dev, last"):
        load_space_dict({**base, "training": {"checkpoint": "best"}}, catalog=CATALOG)


def test_runner_reports_the_best_english_dev_checkpoint(
    tiny_model: Path, mini_data: Path, feature_dir: Path
) -> None:
    from raystilts.data import FeatureStore
    from raystilts.train.runner import ChainPlan, Phase, TrainSettings, run_chain

    store = FeatureStore(cache_dir=feature_dir, tokenizer_dir=tiny_model, max_length=48)
    task = CATALOG["mini_xnli"]
    for split in ("train", "dev", "test"):
        store.ensure(task, split, "en", data_dir=mini_data)
    plan = ChainPlan(
        phases=(),
        target=Phase(task=task, lr=3e-3, steps=12),
        eval_every=2,
        eval_languages=("en",),
        seed=0,
    )
    key = "dev/mini_xnli/en/accuracy"

    def run(checkpoint: Any) -> tuple[dict[str, float], list[dict[str, float]]]:
        reports: list[dict[str, float]] = []
        out = run_chain(
            plan,
            base_model=str(tiny_model),
            store=store,
            settings=TrainSettings(batch_size=8, checkpoint=checkpoint),
            report=reports.append,
            pad_id=1,
        )
        return out, reports

    last, last_reports = run("last")
    best, best_reports = run("best_en_dev")
    assert last["target/kept_step"] == 12.0
    # the same training (same seed): the dev curve at steps 2..10, then the last step's score
    curve = [(int(r["target_step"]), r[key]) for r in last_reports if key in r][:-1]
    assert curve == [(int(r["target_step"]), r[key]) for r in best_reports if key in r][:-1]
    curve.append((12, last[key]))
    top = max(score for _, score in curve)
    kept = next(step for step, score in curve if score == top)  # the earliest best
    assert best["target/kept_step"] == float(kept)
    assert best[key] == top  # the final evaluation scores the kept weights
    assert len({s for _, s in curve}) > 1  # the curve is not flat: the choice was tested
    assert kept != 12  # and here the kept weights are not the last ones (restore is tested)
