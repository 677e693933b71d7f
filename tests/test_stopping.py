"""SIGTERM and Ctrl-C stop a search cleanly (raystilts.core.stopping), without Ray: the handler's
decisions, and what the CLI prints and returns. The real search stopped by SIGTERM and resumed
is tests/test_stop_resume.py (slow)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType

import pytest

from raystilts import cli
from raystilts.core import stopping
from raystilts.core.stopping import SearchInterrupted


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_outside_tune_raises_at_once_with_the_shell_exit_code(
    sig: signal.Signals, code: int
) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(SearchInterrupted) as caught, stopping.installed():
        os.kill(os.getpid(), sig)
    assert caught.value.exit_code == code
    assert not caught.value.tune_started  # nothing for --resume yet
    assert signal.getsignal(sig) is before  # the previous handler is back


def test_signal_inside_tune_asks_tune_to_stop_then_raises_when_fit_returns() -> None:
    asked: list[int] = []

    def tune_handler(signum: int, frame: FrameType | None) -> None:  # what tune.run installs
        asked.append(signum)

    after_signal = []
    with pytest.raises(SearchInterrupted) as caught, stopping.installed():
        # ray.init replaces the SIGTERM handler; search/driver.py reclaims it after init
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stopping.reclaim()
        with stopping.tune_run():
            signal.signal(signal.SIGUSR1, tune_handler)
            os.kill(os.getpid(), signal.SIGTERM)
            after_signal.append("fit went on")  # the handler did not raise inside fit
    assert asked == [signal.SIGUSR1] and after_signal == ["fit went on"]
    assert caught.value.exit_code == 143 and caught.value.tune_started


def test_second_signal_inside_tune_stops_at_once() -> None:
    with pytest.raises(SearchInterrupted), stopping.installed(), stopping.tune_run():
        signal.signal(signal.SIGUSR1, lambda s, f: None)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the second signal must raise")


def test_signal_before_tune_installed_its_handler_raises() -> None:
    with pytest.raises(SearchInterrupted), stopping.installed(), stopping.tune_run():
        os.kill(os.getpid(), signal.SIGTERM)  # SIGUSR1 is still our placeholder


@pytest.mark.parametrize(
    ("started", "last"),
    [
        (True, "raystilts: continue with: raystilts demo --workdir {wd} --resume"),
        (False, "raystilts: start again with: raystilts demo --workdir {wd}"),
    ],
)
def test_cli_exit_code_and_last_line_say_how_to_continue(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    started: bool,
    last: str,
) -> None:
    def stopped_search(space: str, args: object) -> dict[str, object]:
        raise SearchInterrupted(signal.SIGTERM, tune_started=started)

    monkeypatch.setattr(cli, "_search", stopped_search)
    wd = tmp_path / "my runs"
    argv = ["demo", "--workdir", str(wd)]
    assert cli.main([*argv, "--resume"] if started else argv) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1] == last.format(wd=f"'{wd}'")  # quoted: the path has a space


def test_an_error_while_tune_stops_is_part_of_the_stop() -> None:
    with pytest.raises(SearchInterrupted) as caught, stopping.installed(), stopping.tune_run():
        signal.signal(signal.SIGUSR1, lambda s, f: None)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: Ray's processes got it too
        raise RuntimeError("raylet died")
    assert caught.value.exit_code == 130
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_an_error_without_a_signal_stays_an_error() -> None:
    with pytest.raises(RuntimeError), stopping.installed(), stopping.tune_run():
        raise RuntimeError("a real failure")
