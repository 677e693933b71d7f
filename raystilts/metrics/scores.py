"""Metrics of every task type, as the benchmarks compute them; pure numpy and the standard library.

Each function reproduces the official evaluation code of its benchmark (named in its docstring) and
returns fractions in [0, 1] (the official scripts print percentages).

>>> accuracy([0, 1, 2], [0, 1, 1])
0.6666666666666666
>>> token_accuracy([[0, 1, -100]], [[0, 2, 1]])
0.5
>>> squad_scores({"q1": "the Eiffel Tower!"}, {"q1": ["Eiffel Tower", "Paris"]})
{'exact_match': 1.0, 'f1': 1.0}
>>> tagging_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["f1"]
0.0
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

import numpy as np

__all__ = [
    "MLQA_LANGUAGES",
    "accuracy",
    "bucc_candidates",
    "bucc_scores",
    "cosine_similarity",
    "map_at_k",
    "normalize_answer",
    "qa_style",
    "score",
    "squad_scores",
    "tagging_scheme",
    "tagging_scores",
    "tatoeba_accuracy",
    "token_accuracy",
]

IGNORE_INDEX = -100

QAStyle = Literal["squad", "mlqa"]
#: Which SQuAD script's rules score QA: v1.1 (XQuAD, MLQA, TyDiQA-GoldP, SQuAD v1.1, as XTREME
#: runs them) or v2.0 (SQuAD v2.0, with unanswerable questions).
SquadVersion = Literal["v1.1", "v2.0"]
TaggingScheme = Literal["iob2", "pos", "pos-seqeval0"]


def accuracy(gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of equal entries (NaN when there are none)."""
    g, p = np.asarray(gold), np.asarray(pred)
    if g.shape != p.shape:
        raise ValueError(f"gold and predictions differ in shape: {g.shape} vs {p.shape}")
    return float((g == p).mean()) if g.size else float("nan")


def token_accuracy(gold: Sequence[Sequence[int]], pred: Sequence[Sequence[int]]) -> float:
    """Accuracy over scored tokens (gold != -100): POS accuracy, as UD tagging reports it."""
    g = np.concatenate([np.asarray(x) for x in gold]) if len(gold) else np.empty(0, dtype=int)
    p = np.concatenate([np.asarray(x) for x in pred]) if len(pred) else np.empty(0, dtype=int)
    keep = g != IGNORE_INDEX
    return accuracy(g[keep], p[keep])


# ---------------------------------------------------------------------------------------------
# Extractive QA: SQuAD v1.1 / v2.0 and MLQA


#: Languages MLQA's script knows (its answer-language argument); it raises on any other.
MLQA_LANGUAGES = ("en", "es", "hi", "vi", "de", "ar", "zh")

_SQUAD_PUNCT = frozenset(string.punctuation)
# MLQA: articles per answer language, removed as whole words after punctuation.
_MLQA_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    # The script's pattern is '\s<al>^|<al>' with <al> = U+0627 U+0644, the definite article;
    # its first branch never matches ('^' after three characters), so every <al> (also inside
    # words) becomes a space.
    "ar": re.compile("\u0627\u0644"),
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # MLQA's 'Chinese character' range for mixed segmentation


def _is_mlqa_punct(ch: str) -> bool:
    # MLQA's PUNCT set: every Unicode character of a P* category, plus ASCII string.punctuation
    # (which adds symbols such as $ + < = > ^ ` | ~).
    return ch in _SQUAD_PUNCT or unicodedata.category(ch).startswith("P")


def _mixed_segmentation(text: str) -> list[str]:
    """Each CJK character (and punctuation mark) is a token; other runs split on whitespace."""
    tokens: list[str] = []
    run: list[str] = []
    for ch in text:
        if _CJK.match(ch) or _is_mlqa_punct(ch):
            tokens.extend("".join(run).split())
            run = []
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend("".join(run).split())
    return tokens


def qa_style(task_name: str) -> QAStyle:
    """The answer normalisation a QA task is scored with, as XTREME runs its official scripts.

    XTREME evaluates MLQA with MLQA's script (language-specific normalisation) and XQuAD,
    TyDiQA-GoldP and SQuAD with SQuAD's v1.1 script (English normalisation whatever the language).

    >>> qa_style("mlqa"), qa_style("xquad"), qa_style("tydiqa")
    ('mlqa', 'squad', 'squad')
    """
    return "mlqa" if task_name.lower().startswith("mlqa") else "squad"


def normalize_answer(text: str, *, lang: str = "en", style: QAStyle = "squad") -> str:
    """Lower-case, drop punctuation and articles, and collapse whitespace.

    ``style="squad"`` is SQuAD's script (ASCII punctuation, English articles; ``lang`` unused);
    ``style="mlqa"`` is MLQA's: Unicode punctuation, the articles of ``lang`` and, for Chinese,
    one token per character.

    >>> normalize_answer("The  Eiffel-Tower.")
    'eiffeltower'
    >>> normalize_answer("«Los Angeles»", lang="es", style="mlqa")
    'angeles'
    >>> normalize_answer("北京大学", lang="zh", style="mlqa")
    '北 京 大 学'
    """
    text = text.lower()
    if style == "squad":
        text = "".join(ch for ch in text if ch not in _SQUAD_PUNCT)
        return " ".join(_MLQA_ARTICLES["en"].sub(" ", text).split())
    if style != "mlqa":
        raise ValueError(f"unknown QA style {style!r}: use 'squad' or 'mlqa'")
    if lang not in MLQA_LANGUAGES:
        raise ValueError(
            f"MLQA's normalisation has no rules for language {lang!r}; it knows {MLQA_LANGUAGES} "
            "(score other languages with style='squad', as XTREME does for XQuAD and TyDiQA)"
        )
    text = "".join(ch for ch in text if not _is_mlqa_punct(ch))
    if lang in _MLQA_ARTICLES:
        text = _MLQA_ARTICLES[lang].sub(" ", text)
    tokens = _mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(tokens)


def _token_f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:  # SQuAD v2.0: a no-answer scores 1 only against a no-answer
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _token_f1_v11(pred: list[str], gold: list[str]) -> float:
    # v1.1 and MLQA: nothing in common (also both empty) is F1 0
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Mapping[str, str],
    answers: Mapping[str, Sequence[str]],
    *,
    lang: str = "en",
    style: QAStyle = "squad",
    version: SquadVersion = "v2.0",
) -> dict[str, float]:
    """Exact match and token F1, each the max over an example's gold answers, averaged.

    As SQuAD's official scripts (v1.1 ``evaluate-v1.1.py``, v2.0 ``evaluate-v2.0.py``) and, with
    ``style="mlqa"``, MLQA's ``mlqa_evaluation_v1.py`` keyed by the answer language ``lang``
    (see :func:`qa_style` for which task uses which). ``version="v2.0"`` (SQuAD v2.0):
    gold answers that normalise to nothing are dropped, and an example left without any (``[]``)
    is matched only by a prediction that normalises to the empty string (F1 1 when both are
    empty). ``version="v1.1"`` (XQuAD, MLQA, TyDiQA: XTREME scores them with the v1.1 and MLQA
    scripts): every gold answer counts, also one that normalises to nothing, and F1 is 0 when
    prediction and gold share no token, also when both are empty; every example needs a gold
    answer. ``answers`` decides which examples are scored; a missing prediction is an error (the
    runner predicts every example), extra predictions are ignored.

    >>> squad_scores({"a": "", "b": "no"}, {"a": [], "b": []})
    {'exact_match': 0.5, 'f1': 0.5}
    >>> squad_scores({"a": "big red car"}, {"a": ["a red car", "blue"]})["f1"]
    0.8
    >>> squad_scores({"a": "a"}, {"a": ["the"]}, version="v1.1")
    {'exact_match': 1.0, 'f1': 0.0}
    """
    if version not in ("v1.1", "v2.0"):
        raise ValueError(f"unknown SQuAD version {version!r}: use 'v1.1' or 'v2.0'")
    missing = [qid for qid in answers if qid not in predictions]
    if missing:
        raise ValueError(
            f"no prediction for {len(missing)} of {len(answers)} questions, e.g. {missing[:3]}"
        )
    if not answers:
        return {"exact_match": float("nan"), "f1": float("nan")}
    em_sum = f1_sum = 0.0
    for qid, golds in answers.items():
        if isinstance(golds, str):
            raise TypeError(f"answers[{qid!r}] is a string, expected a list of answer strings")
        pred = normalize_answer(predictions[qid], lang=lang, style=style)
        if version == "v1.1":
            if not golds:
                raise ValueError(
                    f"answers[{qid!r}] is empty: SQuAD v1.1 rules need a gold answer per "
                    "question; score unanswerable questions with version='v2.0'"
                )
            all_norm = [normalize_answer(a, lang=lang, style=style) for a in golds]
            em_sum += max(float(pred == g) for g in all_norm)
            f1_sum += max(_token_f1_v11(pred.split(), g.split()) for g in all_norm)
            continue
        gold_norm = [g for g in (normalize_answer(a, lang=lang, style=style) for a in golds) if g]
        gold_norm = gold_norm or [""]
        em_sum += max(float(pred == g) for g in gold_norm)
        f1_sum += max(_token_f1(pred.split(), g.split()) for g in gold_norm)
    return {"exact_match": em_sum / len(answers), "f1": f1_sum / len(answers)}


# ---------------------------------------------------------------------------------------------
# Tagging: entity-level F1 (seqeval / conlleval chunking) and token accuracy

_ENTITY_PREFIXES = ("B-", "I-", "E-", "S-")


def _chunk_type_seqeval1(tag: str) -> str:
    return tag[1:].split("-", 1)[-1] or "_"  # seqeval >= 1.0: 'B-PER' -> 'PER', 'NOUN' -> 'OUN'


def _chunk_type_seqeval0(tag: str) -> str:
    return tag.split("-")[-1]  # seqeval 0.0.x: 'B-PER' -> 'PER', 'NOUN' -> 'NOUN'


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        prev_tag in ("E", "S")
        or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
        or (prev_tag not in ("O", ".") and prev_type != type_)
    )


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        tag in ("B", "S")
        or (tag in ("E", "I") and prev_tag in ("E", "S", "O"))
        or (tag not in ("O", ".") and prev_type != type_)
    )


def _chunks(
    sentences: Sequence[Sequence[str]], type_of: Callable[[str], str]
) -> set[tuple[str, int, int]]:
    """(type, first, last) spans over the sentences joined with 'O', as seqeval's get_entities.

    The first character of a tag is its prefix (B/I/E/S/O) and the rest gives its type; a tag
    without a prefix (a POS tag) is read the same way, which is what seqeval does with UDPOS.
    A chunk that 'starts' without the previous one 'ending' discards the previous one, as in
    seqeval.
    """
    flat = [tag for sentence in sentences for tag in (*sentence, "O")]
    chunks: set[tuple[str, int, int]] = set()
    prev_tag, prev_type, begin = "O", "", 0
    for i, label in enumerate([*flat, "O"]):
        if not label:
            raise ValueError(f"empty tag at flattened position {i}")
        tag, type_ = label[0], type_of(label)
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            chunks.add((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def tagging_scheme(labels: Collection[str]) -> TaggingScheme:
    """'iob2' when every label is O or prefixed (NER: PAN-X), else 'pos' (UDPOS, CCG).

    >>> tagging_scheme(["O", "B-PER", "I-PER"]), tagging_scheme(["NOUN", "VERB"])
    ('iob2', 'pos')
    """
    iob = all(label == "O" or label.startswith(_ENTITY_PREFIXES) for label in labels)
    return "iob2" if iob and labels else "pos"


def tagging_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    *,
    scheme: TaggingScheme = "iob2",
) -> dict[str, float]:
    """Entity-level micro precision, recall and F1, and token accuracy, of tag-name sequences.

    ``scheme="iob2"`` (NER, PAN-X) is seqeval's default mode, the conlleval chunking XTREME's
    ``run_tag.py`` reports: an ``I-`` after ``O`` or after another type opens an entity; an
    entity counts only with exact type and boundaries. ``scheme="pos"`` is what the same code
    reports for UDPOS, where seqeval (>= 1.0) reads the first letter of a POS tag as its prefix
    and the rest as its type: runs of the same tag form one 'entity' (NOUN NOUN), INTJ acts as
    ``I-NTJ``, SCONJ and SYM as single-token ``S-`` chunks, and CCONJ/SCONJ share the type CONJ.
    ``scheme="pos-seqeval0"`` is seqeval 0.0.x (the version installed when XTREME published its
    baselines), which keeps the whole tag as the type; the two differ only where CCONJ and
    SCONJ are adjacent. Precision or recall with nothing to count is 0, as in seqeval.

    >>> tagging_scores([["NOUN", "NOUN", "VERB"]], [["NOUN", "VERB", "VERB"]], scheme="pos")
    {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'accuracy': 0.6666666666666666}
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    if scheme == "iob2":
        bad = next(
            (
                t
                for s in (*gold, *pred)
                for t in s
                if t != "O" and not t.startswith(_ENTITY_PREFIXES)
            ),
            None,
        )
        if bad is not None:
            raise ValueError(
                f"tag {bad!r} is not IOB2 (O, B-X, I-X); score POS-like tags with scheme='pos'"
            )
        type_of = _chunk_type_seqeval1
    elif scheme == "pos":
        type_of = _chunk_type_seqeval1
    elif scheme == "pos-seqeval0":
        type_of = _chunk_type_seqeval0
    else:
        raise ValueError(f"unknown tagging scheme {scheme!r}: use 'iob2', 'pos' or 'pos-seqeval0'")
    true_chunks, pred_chunks = _chunks(gold, type_of), _chunks(pred, type_of)
    correct = len(true_chunks & pred_chunks)
    precision = correct / len(pred_chunks) if pred_chunks else 0.0
    recall = correct / len(true_chunks) if true_chunks else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    flat_gold = [t for s in gold for t in s]
    flat_pred = [t for s in pred for t in s]
    acc = (
        sum(g == p for g, p in zip(flat_gold, flat_pred, strict=True)) / len(flat_gold)
        if flat_gold
        else float("nan")
    )
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": acc}


# ---------------------------------------------------------------------------------------------
# Retrieval without training: cosine similarity of (pooled) embeddings

_BLOCK_ELEMENTS = 1 << 24  # similarity entries per block (128 MiB in float64)


def _unit_rows(x: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (rows, dim), got shape {a.shape}")
    a = a.astype(np.result_type(a.dtype, np.float32), copy=False)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, np.finfo(a.dtype).tiny)


def cosine_similarity(
    a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]
) -> np.ndarray:
    """(A, B) cosine similarities of the rows of ``a`` and ``b`` (a zero row scores 0).

    >>> cosine_similarity([[1.0, 0.0]], [[2.0, 0.0], [0.0, 3.0]]).tolist()
    [[1.0, 0.0]]
    """
    x, y = _unit_rows(a), _unit_rows(b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} vs {y.shape[1]}")
    return x @ y.T


def _top_k(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows x (Q, d) and y (C, d): the k most similar rows of y per row of x.

    Returns (sims, indices), both (Q, k), best first; ties go to the lower index. Computed in
    row blocks so a large candidate set never needs the full (Q, C) matrix.
    """
    q, c = x.shape[0], y.shape[0]
    k = min(k, c)
    sims = np.empty((q, k), dtype=np.result_type(x.dtype, y.dtype))
    inds = np.empty((q, k), dtype=np.int64)
    if k == 0:
        return sims, inds
    step = max(1, _BLOCK_ELEMENTS // max(c, 1))
    for lo in range(0, q, step):
        s = x[lo : lo + step] @ y.T  # (b, C)
        if k < c:  # the k best, unordered; of equal scores at the cut, the lower indices
            neg = -s
            kth = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
            better, tied = neg < kth, neg == kth
            chosen = better | tied
            crowded = np.flatnonzero(chosen.sum(axis=1) > k)  # rows with several tied at the cut
            if crowded.size:
                t = tied[crowded]
                need = k - better[crowded].sum(axis=1, keepdims=True)
                chosen[crowded] = better[crowded] | (t & (np.cumsum(t, axis=1) <= need))
            part = np.nonzero(chosen)[1].reshape(-1, k)
        else:
            part = np.broadcast_to(np.arange(c), s.shape)
        vals = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)  # by score, then by index
        inds[lo : lo + step] = np.take_along_axis(part, order, axis=1)
        sims[lo : lo + step] = np.take_along_axis(vals, order, axis=1)
    return sims, inds


def tatoeba_accuracy(
    query_emb: np.ndarray, cand_emb: np.ndarray, gold: Sequence[int] | np.ndarray
) -> float:
    """Share of queries whose cosine nearest candidate is ``gold[i]`` (an index into cand_emb).

    As XTREME's ``similarity_search`` (LASER's Tatoeba evaluation): L2-normalised embeddings,
    nearest neighbour by inner product. XTREME searches each English sentence among the other
    language's sentences (English as the query side). Ties go to the lower index.

    >>> tatoeba_accuracy(np.eye(3), np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]), [0, 1, 2])
    0.3333333333333333
    """
    x, y = _unit_rows(query_emb), _unit_rows(cand_emb)
    g = np.asarray(gold, dtype=np.int64)
    if g.shape != (x.shape[0],):
        raise ValueError(f"gold has shape {g.shape}, expected one index per query ({x.shape[0]},)")
    if x.shape[0] == 0:
        return float("nan")
    if y.shape[0] == 0:
        raise ValueError("no candidates to retrieve from")
    _, nearest = _top_k(x, y, 1)
    return float((nearest[:, 0] == g).mean())


def bucc_candidates(
    src_emb: np.ndarray,
    src_ids: Sequence[str],
    tgt_emb: np.ndarray,
    tgt_ids: Sequence[str],
    *,
    k: int = 4,
    src_texts: Sequence[str] | None = None,
    tgt_texts: Sequence[str] | None = None,
) -> dict[tuple[str, str], float]:
    """Mined sentence pairs with their ratio-margin scores, best first (LASER/XTREME 'max' mining).

    margin(x, y) = cos(x, y) / ((mean cos of x's k nearest targets + mean cos of y's k nearest
    sources) / 2). Each source proposes its best-margin target among its k nearest, each target
    its best source; the proposals are taken greedily by score, each sentence used once, and
    kept when the score is > 0 (XTREME's ``mine_bitext(mode='mine', retrieval='max',
    margin='ratio', neighborhood=4)``).

    With ``src_texts``/``tgt_texts`` (the sentences, one per row), mining runs over the unique
    texts of each side, as XTREME's ``utils_retrieve.py`` does (``text_load_unify`` and
    ``unique_embeddings``: one row per distinct text, the embedding of its last occurrence),
    and a text that occurs more than once on its side names no id: its pairs are dropped
    (``read_sent2id``). Texts compare after stripping surrounding whitespace.
    """
    x, y = _unit_rows(src_emb), _unit_rows(tgt_emb)
    if (x.shape[0], y.shape[0]) != (len(src_ids), len(tgt_ids)):
        raise ValueError(
            f"{x.shape[0]} source rows for {len(src_ids)} ids, "
            f"{y.shape[0]} target rows for {len(tgt_ids)} ids"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    src_rows, src_names = _unique_texts(src_ids, src_texts)
    tgt_rows, tgt_names = _unique_texts(tgt_ids, tgt_texts)
    out: dict[tuple[str, str], float] = {}
    for (s, t), value in _mine(x[src_rows], y[tgt_rows], k).items():
        src_id, tgt_id = src_names[s], tgt_names[t]
        if src_id is not None and tgt_id is not None:
            out[(src_id, tgt_id)] = max(value, out.get((src_id, tgt_id), -np.inf))
    return out


def _unique_texts(
    ids: Sequence[str], texts: Sequence[str] | None
) -> tuple[list[int], list[str | None]]:
    """Rows to mine over and the id of each (None: the text is repeated, XTREME drops it)."""
    if texts is None:
        return list(range(len(ids))), list(ids)
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts for {len(ids)} ids")
    last: dict[str, int] = {}  # first-occurrence order; the row of the last occurrence
    count: Counter[str] = Counter()
    for i, text in enumerate(texts):
        key = str(text).strip()
        last[key] = i
        count[key] += 1
    return list(last.values()), [ids[i] if count[t] == 1 else None for t, i in last.items()]


def _mine(x: np.ndarray, y: np.ndarray, k: int) -> dict[tuple[int, int], float]:
    """'max' margin mining over unit rows: {(source row, target row): score} of kept pairs."""
    if x.shape[0] == 0 or y.shape[0] == 0:
        return {}
    fwd_sim, fwd_ind = _top_k(x, y, k)  # (S, k)
    bwd_sim, bwd_ind = _top_k(y, x, k)  # (T, k)
    fwd_mean, bwd_mean = fwd_sim.mean(axis=1), bwd_sim.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fwd_scores = fwd_sim / ((fwd_mean[:, None] + bwd_mean[fwd_ind]) / 2)
        bwd_scores = bwd_sim / ((bwd_mean[:, None] + fwd_mean[bwd_ind]) / 2)
    fwd_best = fwd_ind[np.arange(x.shape[0]), fwd_scores.argmax(axis=1)]
    bwd_best = bwd_ind[np.arange(y.shape[0]), bwd_scores.argmax(axis=1)]
    src = np.concatenate([np.arange(x.shape[0]), bwd_best])
    tgt = np.concatenate([fwd_best, np.arange(y.shape[0])])
    scores = np.concatenate([fwd_scores.max(axis=1), bwd_scores.max(axis=1)])
    seen_src: set[int] = set()
    seen_tgt: set[int] = set()
    mined: dict[tuple[int, int], float] = {}
    for i in np.argsort(-scores, kind="stable"):
        s, t = int(src[i]), int(tgt[i])
        if s in seen_src or t in seen_tgt:
            continue
        seen_src.add(s)
        seen_tgt.add(t)
        if scores[i] > 0:
            mined[(s, t)] = float(scores[i])
    return mined


def _bucc_best_threshold(
    candidates: Mapping[tuple[str, str], float], gold: Collection[tuple[str, str]]
) -> float:
    """XTREME's ``bucc_optimize``: the F1-optimal cut, halfway to the next-ranked score."""
    items = sorted(candidates.items(), key=lambda item: -item[1])
    threshold, best_f1, correct = 0.0, 0.0, 0
    for i, (pair, value) in enumerate(items):
        correct += pair in gold
        if correct:
            precision, recall = correct / (i + 1), correct / len(gold)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                # The original indexes items[i + 1] and fails when the best cut keeps every
                # candidate; then every score is kept with the last one as threshold.
                threshold = (value + items[i + 1][1]) / 2 if i + 1 < len(items) else value
    return threshold


def bucc_scores(
    src_emb: np.ndarray,
    src_ids: Sequence[str],
    tgt_emb: np.ndarray,
    tgt_ids: Sequence[str],
    gold_pairs: Collection[tuple[str, str]],
    *,
    k: int = 4,
    threshold: float | None = None,
    src_texts: Sequence[str] | None = None,
    tgt_texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """BUCC 2018 bitext mining: precision, recall and F1 of the mined pairs scoring >= threshold.

    Pairs come from :func:`bucc_candidates`. ``threshold=None`` picks the F1-optimal threshold
    on this data (XTREME's ``bucc_optimize``) and returns it: run it on the dev split and pass
    the returned ``threshold`` to the test split, the benchmark's procedure. Sources without a
    translation simply have no gold pair. With no correct pair everything is 0; an unoptimised
    threshold stays 0 then, as in XTREME. Pass the sentences as ``src_texts``/``tgt_texts``
    to mine over unique texts and drop repeated ones, as XTREME (see :func:`bucc_candidates`).
    """
    gold = {(s, t) for s, t in gold_pairs}
    candidates = bucc_candidates(
        src_emb, src_ids, tgt_emb, tgt_ids, k=k, src_texts=src_texts, tgt_texts=tgt_texts
    )
    if threshold is None:
        threshold = _bucc_best_threshold(candidates, gold)
    extracted = {pair for pair, value in candidates.items() if value >= threshold}
    correct = len(extracted & gold)
    if correct:
        precision, recall = correct / len(extracted), correct / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
    else:
        precision = recall = f1 = 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": float(threshold)}


def map_at_k(
    query_emb: np.ndarray,
    cand_emb: np.ndarray,
    cand_ids: Sequence[str],
    gold: Sequence[Collection[str]],
    k: int = 20,
) -> float:
    """Mean average precision of the top ``k`` candidates by cosine similarity (mAP@20).

    As XTREME-R's ``average_precision_at_k`` for LAReQA and Mewsli-X: over the top k, the sum
    of precision@i at each rank i holding a not-yet-seen relevant id, divided by
    min(number of relevant ids, k). Queries without relevant ids are left out (NaN if none has
    any). Ties go to the earlier candidate.

    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> map_at_k(emb[:1], emb, ["a", "b", "c"], [{"b", "c"}], k=2)
    0.25
    """
    x, y = _unit_rows(query_emb), _unit_rows(cand_emb)
    if y.shape[0] != len(cand_ids):
        raise ValueError(f"{y.shape[0]} candidate rows for {len(cand_ids)} candidate ids")
    if len(gold) != x.shape[0]:
        raise ValueError(f"{len(gold)} gold sets for {x.shape[0]} queries")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scored = [i for i, g in enumerate(gold) if len(g)]
    if not scored:
        return float("nan")
    _, top = _top_k(x[scored], y, k)
    total = 0.0
    for row, qi in zip(top, scored, strict=True):
        relevant = set(gold[qi])
        seen: set[str] = set()
        hits, ap = 0, 0.0
        for rank, ci in enumerate(row, start=1):
            cid = cand_ids[ci]
            if cid in relevant and cid not in seen:
                hits += 1
                ap += hits / rank
            seen.add(cid)
        total += ap / min(len(relevant), k)
    return total / len(scored)


# ---------------------------------------------------------------------------------------------


def score(kind: str, gold: Sequence[Any], pred: Sequence[Any], **kw: Any) -> dict[str, float]:
    """All metrics of a task type, keyed by metric name (the runner's entry point).

    classification / multiple_choice: label indices -> accuracy. tagging: sequences of tag
    names, or of label ids with ``labels=`` (the tag names; -100 positions dropped) -> entity
    scores and accuracy (:func:`tagging_scores`, ``scheme=`` defaulting to
    :func:`tagging_scheme` of the tags); label ids without ``labels`` -> accuracy only.
    """
    if kind in ("classification", "multiple_choice"):
        return {"accuracy": accuracy(gold, pred)}
    if kind == "tagging":
        labels = kw.get("labels")
        if labels is not None:
            gold, pred = _ids_to_tags(gold, pred, labels)
        elif not any(isinstance(t, str) for s in gold for t in s):
            return {"accuracy": token_accuracy(gold, pred)}
        scheme = kw.get("scheme") or tagging_scheme(
            labels if labels is not None else {t for s in gold for t in s}
        )
        return tagging_scores(gold, pred, scheme=scheme)
    raise ValueError(
        f"no label metric for task type {kind!r}: use squad_scores for 'qa' and "
        "tatoeba_accuracy / bucc_scores / map_at_k for 'retrieval'"
    )


def _ids_to_tags(
    gold: Sequence[Sequence[int]], pred: Sequence[Sequence[int]], labels: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    gold_tags: list[list[str]] = []
    pred_tags: list[list[str]] = []
    for g, p in zip(gold, pred, strict=True):
        keep = [(int(a), int(b)) for a, b in zip(g, p, strict=True) if int(a) != IGNORE_INDEX]
        gold_tags.append([labels[a] for a, _ in keep])
        pred_tags.append([labels[b] for _, b in keep])
    return gold_tags, pred_tags
