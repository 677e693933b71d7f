"""The local Ray a search starts prints none of Ray's own warnings into the search's output.

Ray's raylet pushes "(raylet) WARNING: N PYTHON worker processes have been started ..." to the
driver's stdout once its live workers reach four times its startup concurrency (the CPU count),
and no log level silences it. A search on a small machine holds more workers than that (Tune's
trainable, Train's controller and workers per trial), so the driver raises the raylet's
``worker_maximum_startup_concurrency`` (``raystilts.search.driver._init_ray``). This test holds
as many workers as a two-trial search on two cores does, through the driver's own ``_init_ray``,
and checks the driver's output; the control run, with the override pinned back to 2, shows the
check sees the warning when it is printed. Slow (two Ray starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

WARNING = "PYTHON worker processes have been started"
WORKERS = 20  # a two-trial search held ~20 Python workers on 2 cores (over 4 x 2 + 8)

SCRIPT = f"""
import time
from pathlib import Path

import ray

from raystilts.core.space import load_space_dict
from raystilts.search.driver import SearchRun, _init_ray, shutdown_ray
from raystilts.tasks import CATALOG

space = load_space_dict({{"name": "q", "targets": ["mini_xnli"]}}, catalog=CATALOG)
work = Path(WORK)
_init_ray(space, SearchRun(workdir=work, cache_dir=work, tracking_uri="sqlite:///x"), False)


@ray.remote(num_cpus=0.01)
class Idle:
    def ping(self) -> int:
        return 1


actors = [Idle.remote() for _ in range({WORKERS})]
assert sum(ray.get([a.ping.remote() for a in actors])) == {WORKERS}
time.sleep(3)  # the raylet's warning reaches the driver asynchronously
print("held", len(actors), "workers", flush=True)
shutdown_ray()
"""


def _run(tmp_path: Path, **env: str) -> str:
    ray_tmp = tempfile.mkdtemp(prefix="rs-quiet-")  # short: Ray's socket paths have a limit
    full = {k: v for k, v in os.environ.items() if k != "RAY_worker_maximum_startup_concurrency"}
    full.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp, **env)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("WORK", repr(str(tmp_path)))],
        capture_output=True, text=True, env=full, timeout=600,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert f"held {WORKERS} workers" in out
    return out


def test_a_searchs_local_ray_prints_no_worker_count_warning(tmp_path: Path) -> None:
    assert WARNING not in _run(tmp_path)
    # the control: the same workers with the raylet's default threshold on this many CPUs
    assert WARNING in _run(tmp_path, RAY_worker_maximum_startup_concurrency="2")
