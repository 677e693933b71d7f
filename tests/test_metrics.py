"""Metrics: hand-computed cases, edge cases, and randomized cross-checks against independent
implementations (seqeval, torchmetrics, scikit-learn; the dev extra installs them)."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest

from raystilts.metrics import (
    accuracy,
    bucc_candidates,
    bucc_scores,
    cosine_similarity,
    map_at_k,
    normalize_answer,
    qa_style,
    score,
    squad_scores,
    tagging_scheme,
    tagging_scores,
    tatoeba_accuracy,
    token_accuracy,
)
from raystilts.metrics import scores as metrics

# ---------------------------------------------------------------------------------------------
# accuracy and the dispatcher


def test_accuracy_and_token_accuracy() -> None:
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 2], [1])
    assert token_accuracy([[1, -100, 2], [3]], [[1, 5, 0], [3]]) == pytest.approx(2 / 3)


def test_score_dispatch() -> None:
    assert score("classification", [0, 1], [0, 0]) == {"accuracy": 0.5}
    assert score("multiple_choice", [2, 1, 0], [2, 1, 0]) == {"accuracy": 1.0}
    assert score("tagging", [[0, 1, -100]], [[0, 2, 2]]) == {"accuracy": 0.5}  # ids, no names
    labels = ("O", "B-PER", "I-PER")
    ner = score("tagging", [[1, 2, -100, 0]], [[1, 2, 0, 1]], labels=labels)
    assert ner == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "accuracy": 2 / 3}
    pos = score("tagging", [["NOUN", "VERB"]], [["NOUN", "NOUN"]])  # names: scheme inferred
    assert pos["accuracy"] == 0.5 and pos["f1"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="squad_scores"):
        score("qa", [], [])


# ---------------------------------------------------------------------------------------------
# SQuAD / MLQA


def test_squad_hand_cases() -> None:
    preds = {"a": "The Denver Broncos", "b": "Denver", "c": "Carolina Panthers!", "d": ""}
    golds = {
        "a": ["Denver Broncos", "Broncos"],
        "b": ["Denver Broncos"],
        "c": ["Panthers"],
        "d": ["Super Bowl"],
    }
    # a: exact after normalisation; b: P=1, R=1/2; c: P=1/2, R=1; d: empty prediction scores 0.
    out = squad_scores(preds, golds)
    assert out["exact_match"] == pytest.approx(1 / 4)
    assert out["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)
    assert squad_scores({"x": "the cat sat"}, {"x": ["cat cat sat"]})["f1"] == pytest.approx(
        0.8
    )  # common = min counts: {cat: 1, sat: 1}; P = 1, R = 2/3


def test_squad_v2_unanswerable() -> None:
    golds = {"u1": [], "u2": [], "a": ["Paris"]}
    out = squad_scores({"u1": "", "u2": "a", "a": "Paris"}, golds)  # 'a' normalises to ''
    assert out == {"exact_match": 1.0, "f1": 1.0}
    out = squad_scores({"u1": "Paris", "u2": "", "a": ""}, golds)
    assert out == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx(1 / 3)}
    all_unanswerable = squad_scores({"u1": "", "u2": "x"}, {"u1": [], "u2": []})
    assert all_unanswerable == {"exact_match": 0.5, "f1": 0.5}
    # gold answers that normalise to nothing do not count (evaluate-v2.0.py)
    assert squad_scores({"q": ""}, {"q": ["the", "!"]}) == {"exact_match": 1.0, "f1": 1.0}


def test_squad_errors_and_empty() -> None:
    with pytest.raises(ValueError, match="no prediction"):
        squad_scores({}, {"q": ["x"]})
    with pytest.raises(TypeError, match="string"):
        squad_scores({"q": "x"}, {"q": "x"})  # type: ignore[dict-item]
    assert all(math.isnan(v) for v in squad_scores({"extra": "x"}, {}).values())


def test_mlqa_normalisation_per_language() -> None:
    # Unicode punctuation: MLQA drops the guillemets, SQuAD (ASCII only) keeps them.
    assert normalize_answer("«Hola»", lang="es", style="mlqa") == "hola"
    assert normalize_answer("«Hola»") == "«hola»"
    assert normalize_answer("Unos gatos y las casas", lang="es", style="mlqa") == "gatos y casas"
    assert normalize_answer("Der Hund, die Katze", lang="de", style="mlqa") == "hund katze"
    assert normalize_answer("cái bàn của tôi", lang="vi", style="mlqa") == "bàn tôi"
    assert normalize_answer("الكتاب", lang="ar", style="mlqa") == "كتاب"
    assert normalize_answer("भारत का इतिहास।", lang="hi", style="mlqa") == "भारत का इतिहास"
    assert normalize_answer("the end", lang="en", style="mlqa") == "end"
    # Chinese: one token per character; Latin runs stay whole words.
    assert normalize_answer("2008年北京奥运会", lang="zh", style="mlqa") == "2008 年 北 京 奥 运 会"
    with pytest.raises(ValueError, match="'ja'"):
        normalize_answer("x", lang="ja", style="mlqa")
    with pytest.raises(ValueError, match="style"):
        normalize_answer("x", style="tydi")  # type: ignore[arg-type]


def test_mlqa_scores_chinese_by_character() -> None:
    preds, golds = {"q": "北京大学"}, {"q": ["北京"]}
    assert squad_scores(preds, golds, lang="zh", style="mlqa")["f1"] == pytest.approx(2 / 3)
    assert squad_scores(preds, golds)["f1"] == 0.0  # SQuAD's script: one whitespace token
    assert squad_scores({"q": "el perro"}, {"q": ["perro"]}, lang="es", style="mlqa") == {
        "exact_match": 1.0,
        "f1": 1.0,
    }


def test_qa_style() -> None:
    assert [qa_style(t) for t in ("mlqa", "MLQA", "xquad", "tydiqa", "squad_v2")] == [
        "mlqa",
        "mlqa",
        "squad",
        "squad",
        "squad",
    ]


def test_squad_matches_torchmetrics() -> None:
    tm_squad = pytest.importorskip("torchmetrics.functional.text").squad
    rng = random.Random(0)
    words = ["the", "a", "Cat", "cat.", "dog", "Dog's", "(red)", "blue", "an", "x-ray", "42", "é"]

    def phrase(lo: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, 4)))

    preds, golds = {}, {}
    for i in range(300):
        qid = f"q{i}"
        golds[qid] = [
            g for g in (phrase(1) for _ in range(rng.randint(1, 3))) if normalize_answer(g)
        ]
        golds[qid] = golds[qid] or ["dog"]
        preds[qid] = phrase(0)
    ours = squad_scores(preds, golds)
    ref = tm_squad(
        [{"prediction_text": p, "id": q} for q, p in preds.items()],
        [
            {"answers": {"text": golds[q], "answer_start": [0] * len(golds[q])}, "id": q}
            for q in golds
        ],
    )
    assert ours["exact_match"] * 100 == pytest.approx(float(ref["exact_match"]), abs=1e-4)
    assert ours["f1"] * 100 == pytest.approx(float(ref["f1"]), abs=1e-4)
    # unanswerable questions: SQuAD v2.0 gives them the single gold answer ''
    ours = squad_scores({"u": "", "v": "cat"}, {"u": [], "v": []})
    ref = tm_squad(
        [{"prediction_text": "", "id": "u"}, {"prediction_text": "cat", "id": "v"}],
        [{"answers": {"text": [""], "answer_start": [0]}, "id": q} for q in ("u", "v")],
    )
    assert ours["f1"] * 100 == pytest.approx(float(ref["f1"]))
    assert ours["exact_match"] * 100 == pytest.approx(float(ref["exact_match"]))


# ---------------------------------------------------------------------------------------------
# tagging


def test_ner_hand_cases() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O"]]
    # gold: PER(0-1), LOC(3), ORG(5-7); pred: PER(0-1), ORG(3), ORG(5-6): 1 correct of 3 / 3
    out = tagging_scores(gold, pred)
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(1 / 3) and out["accuracy"] == pytest.approx(5 / 7)
    # conlleval leniency: an I- after O, or after another type, opens an entity
    out = tagging_scores([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]])
    assert out["f1"] == 1.0
    out = tagging_scores([["B-PER", "I-LOC"]], [["B-PER", "B-LOC"]])
    assert out["f1"] == 1.0
    # an entity never runs across sentences
    out = tagging_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert out["f1"] == 1.0


def test_ner_no_entities() -> None:
    none = tagging_scores([["O", "O"]], [["O", "O"]])
    assert none == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0}
    spurious = tagging_scores([["O", "O"]], [["B-PER", "O"]])
    assert spurious["precision"] == 0.0 and spurious["f1"] == 0.0
    missed = tagging_scores([["B-PER"]], [["O"]])
    assert missed["recall"] == 0.0 and missed["f1"] == 0.0
    assert math.isnan(tagging_scores([], [])["accuracy"])


def test_tagging_errors() -> None:
    with pytest.raises(ValueError, match="'NOUN' is not IOB2"):
        tagging_scores([["NOUN"]], [["NOUN"]])
    with pytest.raises(ValueError, match="sentence 0"):
        tagging_scores([["O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="2 gold sentences"):
        tagging_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="scheme"):
        tagging_scores([["O"]], [["O"]], scheme="bio")  # type: ignore[arg-type]


def test_pos_as_xtreme_reports_it() -> None:
    # seqeval reads 'NOUN' as prefix N, type OUN: a run of one tag is one 'entity'.
    gold = [["NOUN", "NOUN", "VERB", "DET", "NOUN"]]
    pred = [["NOUN", "NOUN", "VERB", "NOUN", "NOUN"]]
    # gold: OUN(0-1), ERB(2), ET(3), OUN(4); pred: OUN(0-1), ERB(2), OUN(3-4)
    out = tagging_scores(gold, pred, scheme="pos")
    assert (out["precision"], out["recall"]) == (pytest.approx(2 / 3), 0.5)
    assert out["accuracy"] == 0.8
    # SYM / SCONJ read as S- (single-token chunks); CCONJ and SCONJ share the type CONJ in
    # seqeval >= 1.0, so CCONJ right before SCONJ is lost; seqeval 0.0.x keeps both.
    tags = [["CCONJ", "SCONJ", "NOUN"]]
    wrong = [["CCONJ", "ADP", "NOUN"]]
    new = tagging_scores(tags, wrong, scheme="pos")
    old = tagging_scores(tags, wrong, scheme="pos-seqeval0")
    assert (new["recall"], old["recall"]) == (0.5, pytest.approx(2 / 3))
    assert tagging_scheme(["O", "B-LOC", "I-LOC"]) == "iob2"
    assert tagging_scheme(["NOUN", "O"]) == "pos" and tagging_scheme([]) == "pos"


def _seqeval() -> tuple:  # type: ignore[type-arg]
    seq = pytest.importorskip("seqeval.metrics")
    return seq.precision_score, seq.recall_score, seq.f1_score, seq.accuracy_score


def _random_sentences(rng: random.Random, tags: list[str], n: int) -> list[list[str]]:
    return [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_ner_matches_seqeval(seed: int) -> None:
    precision, recall, f1, acc = _seqeval()
    rng = random.Random(seed)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    gold = _random_sentences(rng, tags, 40)
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    out = tagging_scores(gold, pred)
    assert out["precision"] == pytest.approx(precision(gold, pred))
    assert out["recall"] == pytest.approx(recall(gold, pred))
    assert out["f1"] == pytest.approx(f1(gold, pred))
    assert out["accuracy"] == pytest.approx(acc(gold, pred))


UPOS = [
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
]


@pytest.mark.parametrize("seed", range(5))
def test_pos_matches_seqeval(seed: int) -> None:
    precision, recall, f1, _ = _seqeval()
    rng = random.Random(seed)
    gold = _random_sentences(rng, UPOS, 40)
    pred = [[t if rng.random() < 0.6 else rng.choice(UPOS) for t in s] for s in gold]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "NOUN seems not to be NE tag."
        ref = (precision(gold, pred), recall(gold, pred), f1(gold, pred))
    out = tagging_scores(gold, pred, scheme="pos")
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx(ref)


# ---------------------------------------------------------------------------------------------
# retrieval


def test_cosine_and_tatoeba_hand_cases() -> None:
    assert cosine_similarity([[3.0, 4.0]], [[6.0, 8.0], [0.0, 0.0]]).tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError, match="sizes differ"):
        cosine_similarity([[1.0]], [[1.0, 2.0]])
    queries = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    cands = np.array([[10.0, 0.0], [0.0, 0.5], [1.0, 0.0]])  # cands 0 and 2 tie for query 0
    assert tatoeba_accuracy(queries, cands, [0, 1, 0]) == 1.0  # ties -> lower index
    assert tatoeba_accuracy(queries, cands, [2, 1, 1]) == pytest.approx(1 / 3)
    assert math.isnan(tatoeba_accuracy(np.empty((0, 2)), cands, []))
    with pytest.raises(ValueError, match="one index per query"):
        tatoeba_accuracy(queries, cands, [0])


def test_tatoeba_matches_sklearn() -> None:
    neighbors = pytest.importorskip("sklearn.neighbors")
    rng = np.random.default_rng(0)
    cands = rng.normal(size=(200, 16))
    queries = cands[rng.permutation(200)[:150]] + rng.normal(scale=1.5, size=(150, 16))
    gold = rng.integers(0, 200, size=150)
    nn = neighbors.NearestNeighbors(n_neighbors=1, metric="cosine").fit(cands)
    ref_pred = nn.kneighbors(queries, return_distance=False)[:, 0]
    for g in (gold, ref_pred):
        assert tatoeba_accuracy(queries, cands, g) == pytest.approx(float((ref_pred == g).mean()))


def test_top_k_blocks_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    x, y = (
        metrics._unit_rows(rng.normal(size=(50, 8))),
        metrics._unit_rows(rng.normal(size=(30, 8))),
    )
    full = metrics._top_k(x, y, 5)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)  # one row per block
    blocked = metrics._top_k(x, y, 5)
    np.testing.assert_array_equal(full[1], blocked[1])
    ref = np.argsort(-(x @ y.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(full[1], ref)
    # equal scores at the cut go to the lower indices
    y = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
    sims, inds = metrics._top_k(np.array([[1.0, 0.0]]), y, 2)
    assert inds.tolist() == [[1, 2]] and sims.tolist() == [[1.0, 1.0]]
    assert metrics._top_k(np.array([[1.0, 0.0]]), y, 4)[1].tolist() == [[1, 2, 4, 3]]


def test_bucc_hand_case_with_untranslated_source() -> None:
    # k=1: s0 = t0, s1 = t1; s2 has no translation and its nearest target, t0, is taken.
    src = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.6, 0, 0.8]])
    tgt = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    cands = bucc_candidates(src, ["s0", "s1", "s2"], tgt, ["t0", "t1"], k=1)
    assert cands == {("s0", "t0"): 1.0, ("s1", "t1"): 1.0}
    out = bucc_scores(src, ["s0", "s1", "s2"], tgt, ["t0", "t1"], {("s0", "t0"), ("s1", "t1")}, k=1)
    assert out == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "threshold": 1.0}
    # k=2 with s2 alone: s2's two nearest targets have mean cos (0.6 + 0) / 2, t0 has one
    # source (k is capped at 1), so margin(s2, t0) = 0.6 / ((0.3 + 0.6) / 2)
    cands = bucc_candidates(src[2:], ["s2"], tgt, ["t0", "t1"], k=2)
    assert cands == {("s2", "t0"): pytest.approx(0.6 / 0.45)}
    assert bucc_candidates(src[:0], [], tgt, ["t0", "t1"]) == {}


def test_bucc_threshold_procedure() -> None:
    cands = {("a", "1"): 0.9, ("b", "2"): 0.8, ("c", "3"): 0.7, ("d", "4"): 0.6}
    # F1 after each candidate: 2/3 (cut 0.85), 1/2, 4/5 (cut 0.65, best), 2/3
    assert metrics._bucc_best_threshold(cands, {("a", "1"), ("c", "3")}) == pytest.approx(0.65)
    assert metrics._bucc_best_threshold(cands, set(cands)) == 0.6  # best keeps all: last score
    assert metrics._bucc_best_threshold(cands, {("x", "y")}) == 0.0  # nothing correct
    # dev picks the threshold, test applies it
    rng = np.random.default_rng(2)
    dev_src, dev_tgt, dev_gold, ids = _planted(rng, 60, 40)
    dev = bucc_scores(dev_src, ids[0], dev_tgt, ids[1], dev_gold)
    test_src, test_tgt, test_gold, tids = _planted(rng, 60, 40)
    test = bucc_scores(test_src, tids[0], test_tgt, tids[1], test_gold, threshold=dev["threshold"])
    assert test["threshold"] == dev["threshold"]
    best_on_test = bucc_scores(test_src, tids[0], test_tgt, tids[1], test_gold)
    assert best_on_test["f1"] >= test["f1"] > 0.5
    nothing = bucc_scores(dev_src, ids[0], dev_tgt, ids[1], set())
    assert nothing == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "threshold": 0.0}


def _planted(
    rng: np.random.Generator, n_src: int, n_pairs: int, dim: int = 12
) -> tuple[np.ndarray, np.ndarray, set[tuple[str, str]], tuple[list[str], list[str]]]:
    """Sources and targets where the first n_pairs targets are noisy copies of sources."""
    src = rng.normal(size=(n_src, dim))
    tgt = np.concatenate([src[:n_pairs] + rng.normal(scale=0.6, size=(n_pairs, dim))])
    tgt = np.concatenate([tgt, rng.normal(size=(n_src - n_pairs, dim))])
    order = rng.permutation(n_src)
    tgt = tgt[order]
    src_ids = [f"s{i}" for i in range(n_src)]
    tgt_ids = [f"t{i}" for i in range(n_src)]
    where = {int(o): i for i, o in enumerate(order)}
    gold = {(f"s{i}", f"t{where[i]}") for i in range(n_pairs)}
    return src, tgt, gold, (src_ids, tgt_ids)


def _xtreme_bucc(x: np.ndarray, y: np.ndarray, k: int) -> dict[tuple[int, int], float]:
    """Loop transcription of XTREME's mine_bitext(mode='mine', retrieval='max', margin='ratio')
    with exact brute-force neighbours in place of faiss: the test oracle."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)

    def knn(a: np.ndarray, b: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        sims = a @ b.T
        ind = np.array([sorted(range(len(b)), key=lambda j: (-row[j], j))[:kk] for row in sims])
        return np.take_along_axis(sims, ind, axis=1), ind

    x2y_sim, x2y_ind = knn(x, y, min(len(y), k))
    y2x_sim, y2x_ind = knn(y, x, min(len(x), k))
    x2y_mean, y2x_mean = x2y_sim.mean(axis=1), y2x_sim.mean(axis=1)

    def candidates(a, b, inds, fwd_mean, bwd_mean):  # type: ignore[no-untyped-def]
        out = np.zeros(inds.shape)
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                c = inds[i, j]
                out[i, j] = a[i].dot(b[c]) / ((fwd_mean[i] + bwd_mean[c]) / 2)
        return out

    fwd = candidates(x, y, x2y_ind, x2y_mean, y2x_mean)
    bwd = candidates(y, x, y2x_ind, y2x_mean, x2y_mean)
    proposals = [(fwd[i].max(), i, int(x2y_ind[i, fwd[i].argmax()])) for i in range(len(x))]
    proposals += [(bwd[j].max(), int(y2x_ind[j, bwd[j].argmax()]), j) for j in range(len(y))]
    order = sorted(range(len(proposals)), key=lambda n: -proposals[n][0])
    seen_src, seen_tgt, mined = set(), set(), {}
    for n in order:
        value, i, j = proposals[n]
        if i not in seen_src and j not in seen_tgt:
            seen_src.add(i)
            seen_tgt.add(j)
            if value > 0:
                mined[(i, j)] = value
    return mined


@pytest.mark.parametrize(("seed", "k"), [(0, 4), (1, 4), (2, 1), (3, 7)])
def test_bucc_matches_xtreme_loop(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    src, tgt, gold, (src_ids, tgt_ids) = _planted(rng, 50, 30)
    tgt = tgt[:45]  # unequal sides; some gold targets vanish, their sources go untranslated
    tgt_ids = tgt_ids[:45]
    gold = {(s, t) for s, t in gold if int(t[1:]) < 45}
    ref = {(src_ids[i], tgt_ids[j]): v for (i, j), v in _xtreme_bucc(src, tgt, k).items()}
    ours = bucc_candidates(src, src_ids, tgt, tgt_ids, k=k)
    # same pairs, each with its score, in the same score order (ties at 1 ulp, e.g. k=1 where
    # every margin is 1, may come in either order)
    assert set(ours) == set(ref)
    assert all(ours[p] == pytest.approx(v) for p, v in ref.items())
    assert list(ours.values()) == pytest.approx(list(ref.values()))
    out = bucc_scores(src, src_ids, tgt, tgt_ids, gold, k=k)
    # the threshold over our candidates: equal to ref's up to float noise, which under ties
    # (k=1) decides where the best cut falls
    th = metrics._bucc_best_threshold(ours, gold)
    extracted = {p for p, v in ours.items() if v >= th}
    correct = len(extracted & gold)
    assert out["threshold"] == pytest.approx(th)
    assert out["precision"] == pytest.approx(correct / len(extracted))
    assert out["recall"] == pytest.approx(correct / len(gold))


def test_map_at_k_hand_cases() -> None:
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])  # ranked a, b, c, d for q0
    ids = ["a", "b", "c", "d"]
    q = emb[:1]
    assert map_at_k(q, emb, ids, [{"a"}]) == 1.0
    assert map_at_k(q, emb, ids, [{"b", "d"}]) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert map_at_k(q, emb, ids, [{"b", "d"}], k=2) == pytest.approx((1 / 2) / 2)
    # more relevant than k: divide by k, not by the number relevant
    assert map_at_k(q, emb, ids, [{"a", "b", "c"}], k=2) == 1.0
    assert map_at_k(q, emb, ids, [{"d", "zz"}], k=4) == pytest.approx((1 / 4) / 2)  # zz unseen
    # duplicate candidate ids count once
    assert map_at_k(q, emb, ["a", "a", "c", "d"], [{"a", "c"}]) == pytest.approx((1 + 2 / 3) / 2)
    # queries without gold are left out
    two = np.stack([emb[0], emb[3]])
    assert map_at_k(two, emb, ids, [{"a"}, set()]) == 1.0
    assert math.isnan(map_at_k(two, emb, ids, [set(), set()]))
    with pytest.raises(ValueError, match="gold sets"):
        map_at_k(two, emb, ids, [{"a"}])
    with pytest.raises(ValueError, match="candidate ids"):
        map_at_k(two, emb, ids[:3], [{"a"}, {"b"}])


def test_map_matches_sklearn_and_torchmetrics() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    tmr = pytest.importorskip("torchmetrics.functional.retrieval")
    import torch

    rng = np.random.default_rng(3)
    cands = np.abs(rng.normal(size=(60, 8)))  # positive: torchmetrics drops targets scored <= 0
    queries = np.abs(rng.normal(size=(25, 8)))
    ids = [f"c{i}" for i in range(60)]
    gold = [set(rng.choice(ids, size=rng.integers(1, 30), replace=False)) for _ in range(25)]
    sims = cosine_similarity(queries, cands)
    targets = np.array([[cid in g for cid in ids] for g in gold])
    # whole ranking: the usual average precision
    ref = np.mean([skm.average_precision_score(t, s) for t, s in zip(targets, sims, strict=True)])
    assert map_at_k(queries, cands, ids, gold, k=60) == pytest.approx(ref)
    # @k: torchmetrics averages over the hits in the top k; XTREME-R divides by min(R, k)
    for k in (1, 5, 20):
        per_query = []
        for t, s in zip(targets, sims, strict=True):
            tm_ap = float(
                tmr.retrieval_average_precision(torch.tensor(s), torch.tensor(t), top_k=k)
            )
            hits = int(t[np.argsort(-s, kind="stable")[:k]].sum())
            per_query.append(tm_ap * hits / min(int(t.sum()), k))
        assert map_at_k(queries, cands, ids, gold, k=k) == pytest.approx(np.mean(per_query))


def test_retrieval_input_checks() -> None:
    with pytest.raises(ValueError, match="2-d"):
        tatoeba_accuracy(np.ones(3), np.ones((2, 3)), [0, 0, 0])
    with pytest.raises(ValueError, match="ids"):
        bucc_scores(np.ones((2, 2)), ["a"], np.ones((2, 2)), ["x", "y"], set())
    with pytest.raises(ValueError, match="k must be"):
        map_at_k(np.ones((1, 2)), np.ones((2, 2)), ["a", "b"], [{"a"}], k=0)


def test_every_public_name_exported() -> None:
    for name in metrics.__all__:
        assert hasattr(metrics, name)
    assert {"squad_scores", "tagging_scores", "bucc_scores", "map_at_k"} <= set(metrics.__all__)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0
