"""The transfer-table reader, the prior, and the tabular replay on a hand-made table."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from raystilts.core.errors import UserError
from raystilts.core.transfer_tables import read_table
from raystilts.search.prior import Evidence, build_prior, rank_tasks, scaled_ranks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

HEADER = "intermediate,target,language,seed,score,baseline_score,metric,source_path\n"


def _write(tmp_path: Path, body: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


# Target x: a is best (0.80), b close (0.78), c bad; the baseline has two runs.
# Target y: a best again, c worst; x is also an intermediate for y (and y's self row exists).
TABLE = """\
a,x,en,1,0.80,0.70,acc,s
a,x,en,2,0.80,0.70,acc,s
a,x,en,mean,0.80,0.70,acc,s
b,x,en,1,0.77,0.70,acc,s
b,x,en,2,0.79,0.70,acc,s
c,x,en,1,0.60,0.70,acc,s
c,x,en,2,nan,0.70,acc,s
NONE,x,en,1,0.71,0.70,acc,s
NONE,x,en,2,0.69,0.70,acc,s
x,x,en,1,0.99,0.70,acc,s
a,y,en,1,0.50,,acc,s
b,y,en,1,0.45,,acc,s
c,y,en,1,0.30,,acc,s
x,y,en,1,0.40,,acc,s
y,y,en,1,0.90,,acc,s
"""


def test_reader_skips_means_keeps_nan_and_leaves_self_transfer_out(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path, TABLE))
    assert table.targets() == ["x", "y"]
    assert table.skipped == {"seed = mean (derived)": 1, "self-transfer (not a candidate)": 2}
    cells = table.cells("x")
    assert list(cells) == ["a", "b", "c"]  # no NONE, no self-transfer
    assert math.isnan(cells["c"]["2"]) and cells["c"]["1"] == 0.60  # a missing score: NaN
    assert table.baseline("x") == [0.71, 0.69]
    assert list(table.cells("y")) == ["a", "b", "c", "x"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,x,en,1,abc,,acc,s\n", "t.csv:2: score 'abc' is not a number"),
        ("a,,en,1,0.5,,acc,s\n", "t.csv:2: empty 'target'"),
        ("a,x,en,1,0.5,,acc,s\na,x,en,1,0.6,,acc,s\n", "t.csv:3: the row of a/x/en/1 repeats"),
        ("a,x,en,1,0.5,,acc,s,extra\n", "t.csv:2: more fields than columns"),
        ("a,x,en,1,inf,,acc,s\n", "is infinite"),
        ("a,x,en,mean,0.5,,acc,s\n", "no rows with a seed other than 'mean'"),
        ("sst>mnli,x,en,1,0.5,,acc,s\n", "intermediate 'sst>mnli' holds one of"),
        ("a,rte/x,en,1,0.5,,acc,s\n", "target 'rte/x' holds one of"),
    ],
)
def test_reader_refuses_bad_rows_in_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as e:
        read_table(_write(tmp_path, body))
    assert len(str(e.value).splitlines()) == 1


def test_reader_takes_a_spreadsheet_bom_and_refuses_other_encodings(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes(("\ufeff" + HEADER + "a,x,en,1,0.5,,acc,s\n").encode("utf-8"))
    assert read_table(bom).targets() == ["x"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + "é,x,en,1,0.5,,acc,s\n").encode("latin-1"))
    with pytest.raises(UserError, match="not a UTF-8 CSV") as e:
        read_table(latin)
    assert len(str(e.value).splitlines()) == 1


def test_reader_names_missing_columns_and_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("intermediate,target,seed\na,x,1\n")
    with pytest.raises(UserError, match="missing column\\(s\\) language, score"):
        read_table(bad)
    with pytest.raises(UserError, match="cannot read"):
        read_table(tmp_path / "absent.csv")


def test_prior_ranks_within_each_other_target_and_shrinks_thin_evidence() -> None:
    assert scaled_ranks({"a": 0.9, "b": 0.5, "c": 0.5}) == {"a": 1.0, "b": 0.25, "c": 0.25}
    evidence = [
        # three targets on which "good" is best (on very different scales) and "bad" worst
        *(Evidence(t, ("good",), s) for t, s in (("u", 0.9), ("v", 90.0), ("w", 0.3))),
        *(Evidence(t, ("mid",), s) for t, s in (("u", 0.8), ("v", 80.0), ("w", 0.2))),
        *(Evidence(t, ("bad",), s) for t, s in (("u", 0.1), ("v", 10.0), ("w", 0.1))),
        # "lucky" was run on one target only, where it was best
        Evidence("z", ("lucky",), 0.99),
        Evidence("z", ("bad",), 0.1),
        # the searched target's own runs, a longer chain and a NaN are not evidence
        Evidence("t", ("bad",), 1.0),
        Evidence("u", ("bad", "good"), 5.0),
        Evidence("v", ("mid",), math.nan),
    ]
    tasks = ("bad", "good", "lucky", "mid", "unseen")
    prior = build_prior(evidence, tasks=tasks, target="t")
    assert prior.sources == ("u", "v", "w", "z")
    assert prior.score("good") == pytest.approx((3 + 0.5) / 4)
    assert prior.score("lucky") == pytest.approx((1 + 0.5) / 2)  # one target: shrunk to 0.75
    assert prior.score("unseen") == 0.5
    assert prior.ranking(tasks) == ("good", "lucky", "mid", "unseen", "bad")
    # the warm start counts as one more target: "unseen", which only it has seen (first: 1.0),
    # goes first; "good" (3 targets' 1.0 and the warm start's 0.25: 0.81) keeps second
    warm = ("unseen", "bad", "mid", "good", "lucky")
    assert prior.ranking(tasks, warm=warm)[:2] == ("unseen", "good")
    empty = build_prior([], tasks=tasks, target="t")
    assert rank_tasks(empty, tasks, None) is None
    assert rank_tasks(empty, tasks, ("mid", "bad")) == ("mid", "bad")


def test_replay_finds_the_known_best_and_scores_every_search(tmp_path: Path) -> None:
    import transfer_tables as tt

    table = read_table(_write(tmp_path, TABLE))
    truth = tt.truth_of(table, "x")
    assert truth.best == pytest.approx(0.80) and truth.grid == 6
    # pooled over a and b (c has one finite seed): sqrt((0 + 0.0002) / 2)
    assert truth.sd == pytest.approx(0.01) and truth.sd_source == "seeds"
    assert tt.truth_of(table, "y").sd_source == "none"  # one seed, no baseline runs
    # found: the selection's true mean within one sd of 0.80 (b at 0.78 is not), and stays
    out = tt.outcome(["b", "a", "b", "a", "a", "a"], truth)
    assert out.found and out.until_found == 4
    assert tt.outcome(["a", "a", "b"], truth).found is False
    # the prior for x comes from y alone (leave-one-target-out): a > b > c there
    assert tt.prior_ranking(table, "x", ["a", "b", "c"]) == ("a", "b", "c")
    run = tt.run_table(table, repeats=2, log=lambda s: None)
    per = run["results"]["x"]  # type: ignore[index]
    assert all(o.found for outs in per.values() for o in outs)
    assert per["default"][0].until_found == 1  # the prior's first task is the best: found at once
    assert per["grid"][0].until_found == 6
    line = tt.summary(run, log=lambda s: None)
    assert line.startswith("transfer_tables: default/grid=") and "found=2/2" in line


def test_replay_selection_is_the_searchs_own(tmp_path: Path) -> None:
    """The replay's incremental selection equals ChainSearch.selection() after every trial."""
    import transfer_tables as tt

    from raystilts.search.searcher import Launch, build_search

    path = tt.synthetic_table(tmp_path / "s.csv", intermediates=8, targets=2, seeds=3)
    table = read_table(path)
    target = table.targets()[1]
    cells, truth = table.cells(target), tt.truth_of(table, target)
    space = tt.space_for(target, list(cells), len(truth.seeds), sampler_seed=3)
    trace = tt.replay(space, target, truth, cells, None)
    search, own = build_search(space, target), []
    while isinstance(step := search.suggest(), Launch):
        (task,) = search.chain(step.key)
        search.report(step.key, step.index, cells[task][truth.seeds[step.index]])
        own.append(search.chain(k)[0] if (k := search.selection()) else "")
    assert trace == own


def test_benchmark_smoke_prints_its_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    import transfer_tables as tt

    assert tt.main(["--smoke"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("transfer_tables: default/grid=") and "found=" in last


def test_prior_reweights_other_targets_by_agreement_with_this_targets_scores() -> None:
    from raystilts.search.prior import Reranker

    # u ranks a > b > c > d; v ranks the reverse; averaged they cancel out
    evidence = [
        *(Evidence("u", (t,), s) for t, s in zip("abcd", (4, 3, 2, 1), strict=True)),
        *(Evidence("v", (t,), s) for t, s in zip("abcd", (1, 2, 3, 4), strict=True)),
    ]
    prior = build_prior(evidence, tasks="abcd", target="t")
    assert prior.score("a") == prior.score("d") == pytest.approx(0.5)
    # this target scored b > c > d so far: it agrees with u (+1), disagrees with v (weight 0)
    observed = {"b": 0.9, "c": 0.5, "d": 0.1}
    assert prior.reweighted(observed).ranking("abcd")[0] == "a"
    assert Reranker(prior, ("a", "b", "c", "d"))(observed)[0] == "a"
    # fewer than three shared tasks: no weighting yet
    assert prior.reweighted({"d": 0.9, "c": 0.1}) is prior


def test_reranker_ranks_exactly_as_the_reweighted_prior() -> None:
    """The Reranker's numpy rows are a speed-up of Prior.reweighted().ranking(), not a new rule:
    on random priors with ties, missing cells and a warm start, the two rankings are equal."""
    import random

    from raystilts.search.prior import Reranker

    rng = random.Random(1)
    for _ in range(200):
        tasks = [f"t{i}" for i in range(rng.randint(2, 12))]
        evidence = [
            Evidence(f"o{o}", (t,), rng.choice([0.1, 0.2, 0.3, rng.random()]))
            for o in range(rng.randint(1, 6))
            for t in tasks
            if rng.random() < 0.8
        ]
        prior = build_prior(evidence, tasks=tasks, target="x")
        warm = tuple(rng.sample(tasks, len(tasks))) if rng.random() < 0.5 else None
        observed = {t: rng.choice([0.5, 0.6, rng.random()]) for t in tasks if rng.random() < 0.6}
        expected = prior.reweighted(observed).ranking(tuple(tasks), warm)
        assert Reranker(prior, tuple(tasks), warm)(observed) == expected


def test_space_reads_search_prior_and_round_trips() -> None:
    from raystilts.core.space import load_space_dict
    from raystilts.tasks import CATALOG as REAL

    raw = {
        "name": "p",
        "targets": ["mini_xnli"],
        "search": {"prior": {"experiments": ["pub", "older"], "other_targets": False}},
    }
    space = load_space_dict(raw, catalog=REAL)
    assert space.search.prior.experiments == ("pub", "older")
    assert not space.search.prior.other_targets
    assert load_space_dict(space.to_dict(), catalog=REAL) == space
    with pytest.raises(UserError, match=r"search\.prior\.experiments"):
        load_space_dict({**raw, "search": {"prior": {"experiments": "pub"}}}, catalog=REAL)


def test_target_values_count_being_near_that_targets_best_when_seeds_show_the_noise() -> None:
    from raystilts.search.prior import seed_sd, target_values

    # seed sd 0.01 (pooled over a and b); a is best, b within 0.01 of it, c and d are not
    scores = {"a": [0.80, 0.82], "b": [0.80, 0.80], "c": [0.70, 0.72], "d": [0.5]}
    assert seed_sd(scores) == pytest.approx(math.sqrt((0.0002 + 0 + 0.0002) / 3))
    values = target_values(scores)
    assert values["a"] == 1.0 and values["b"] == pytest.approx((2 / 3 + 1) / 2)
    assert values["c"] == pytest.approx(1 / 6) and values["d"] == 0.0
    # one seed per cell: the noise is unknown, the scaled rank alone
    assert target_values({"a": [0.8], "b": [0.5], "c": [0.6]}) == {"a": 1.0, "b": 0.0, "c": 0.5}
    # so a task that is often near the best outranks one that is always second-tier: "near" is
    # within noise of the best on u and v, "steady" is clearly second on both, "top" wins them
    evidence = [
        Evidence(t, (task,), s + d)
        for t in ("u", "v")
        for task, s in (("top", 0.90), ("near", 0.895), ("steady", 0.85), ("low", 0.6))
        for d in (0.0, 0.01)
    ]
    evidence += [  # on w, "near" falls to the bottom and "steady" stays second
        Evidence("w", (task,), s + d)
        for task, s in (("top", 0.9), ("steady", 0.85), ("low", 0.6), ("near", 0.5))
        for d in (0.0, 0.01)
    ]
    ranking = build_prior(evidence, tasks=("top", "near", "steady", "low"), target="t").ranking(
        ("steady", "near", "top", "low")
    )
    assert ranking[:2] == ("top", "near")  # by mean rank alone "steady" (0.67 x 3) beats "near"


def test_evidence_from_a_search_is_one_per_seed_score() -> None:
    import transfer_tables as tt

    from raystilts.search.prior import evidence_from_search
    from raystilts.search.searcher import Launch, build_search

    space = tt.space_for("t", ["a", "b"], 2, race_within_sd=None)
    search = build_search(space, "t")
    scores = {("a", 0): 0.5, ("a", 1): 0.7, ("b", 0): math.nan, ("b", 1): 0.4}
    while isinstance(step := search.suggest(), Launch):
        search.report(step.key, step.index, scores[(search.chain(step.key)[0], step.index)])
    got = sorted((e.chain, e.score) for e in evidence_from_search(search))
    assert got == [(("a",), 0.5), (("a",), 0.7), (("b",), 0.4)]  # the failed seed is no evidence


def test_one_seed_per_cell_takes_the_noise_from_the_baseline_runs() -> None:
    import doctest
    import statistics

    from raystilts.search import prior
    from raystilts.search.prior import seed_sd

    assert seed_sd({"a": [0.8], "b": [0.7]}) is None
    assert seed_sd({"a": [0.8], "b": [0.7]}, [0.6, 0.62, 0.65]) == statistics.stdev(
        [0.6, 0.62, 0.65]
    )
    assert seed_sd({"a": [0.8, 0.82], "b": [0.7]}, [0.1, 0.9]) == pytest.approx(0.02 / 2**0.5)
    # a target's baseline runs reach build_prior as the empty chain: b is within their sd of a
    evidence = [Evidence("u", (t,), s) for t, s in (("a", 0.80), ("b", 0.795), ("c", 0.5))]
    evidence += [Evidence("u", (), s) for s in (0.6, 0.61)]
    built = build_prior(evidence, tasks="abc", target="t")
    assert built.ranks["u"] == {"a": 1.0, "b": 0.75, "c": 0.0}
    assert doctest.testmod(prior).failed == 0


def test_agreement_over_few_tasks_moves_a_targets_weight_little() -> None:
    from raystilts.search.prior import agreement_weight

    assert agreement_weight(0.9, 2) == 1.0  # below MIN_SHARED: one vote, no evidence
    assert agreement_weight(1.0, 3) == pytest.approx(1 + 2**0.5)
    assert agreement_weight(-1.0, 3) == 0.0 and agreement_weight(-0.1, 3) > 0.8
    assert agreement_weight(0.5, 17) == pytest.approx(3.0)  # rho 0.5 over 17: 2 null sds
