"""The live line of a running trial (raystilts.core.progress), with a clock we control."""

from __future__ import annotations

from pathlib import Path

import pytest

from raystilts.core.progress import TrialProgress

KEY = "dev/mini_xnli/en/accuracy"


def test_line_shows_step_score_and_time_left_from_the_target_phase_rate() -> None:
    now = [100.0]
    progress = TrialProgress(target="mini_xnli", metric=KEY, total=100, clock=lambda: now[0])
    first = progress.line("t1", "mini_mnli>mini_xnli#0", {"target_step": 25.0, KEY: 0.612})
    assert first is not None
    assert "target 25/100" in first and "en dev 61.2" in first and "time left ?" in first
    now[0] = 110.0  # 25 steps in 10 s: 50 steps left take 20 s
    second = progress.line("t1", "mini_mnli>mini_xnli#0", {"target_step": 50.0, KEY: 0.70})
    assert second is not None and "target 50/100" in second and "~20s left" in second
    assert progress.line("t1", "x", {"target_step": 100.0}) is None  # the end line is _end's
    assert progress.line("t1", "x", {"training_iteration": 1}) is None
    progress.forget("t1")
    assert progress.first == {}


def test_bar_in_a_log_prints_a_line_per_tenth_not_per_step() -> None:
    import io

    from raystilts.core.progress import Bar

    out = io.StringIO()  # not a TTY: lines, no carriage returns
    bar = Bar("tokenizing", total=40, stream=out)
    for _ in range(40):
        bar.advance(suffix="mini_xnli en dev")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in out.getvalue()  # the first step, then each tenth
    assert lines[-1].startswith("  tokenizing [########################] 40/40")
    assert lines[-1].endswith("mini_xnli en dev")


def test_first_tokenization_shows_one_bar_not_one_per_set(
    tmp_path: Path, tiny_model: Path, mini_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from raystilts.tasks import CATALOG
    from raystilts.train.workspace import prepare_workspace

    xnli = CATALOG["mini_xnli"]
    needs = {(xnli, split, "en") for split in ("train", "dev")} | {(xnli, "test", "qaa")}
    prepare_workspace(model=str(tiny_model), needs=needs, max_length=32, cache_dir=tmp_path,
                      data_dir=mini_data, log=True)  # fmt: skip
    printed = capfd.readouterr()
    assert "tokenizing [########################] 3/3" in printed.out
    assert "mini_xnli qaa test" in printed.out or "mini_xnli en " in printed.out
    assert "Saving the dataset" not in printed.out + printed.err  # datasets' own bars are off
