"""Offline checks of ``cluster.yaml``: Ray's own validation, then our invariants.

Validation path: Ray's own, the two steps ``ray up`` runs before any cloud call.
``ray.autoscaler._private.util.prepare_config`` merges the provider's defaults (for ``aws``
only a read of ``ray/autoscaler/aws/defaults.yaml``: no boto3, which this environment does
not even install) and ``validate_config`` checks ``ray/autoscaler/ray-schema.json`` plus the
node-type rules (``head_node_type`` among ``available_node_types``, sum of ``min_workers`` at
most ``max_workers``). The cloud steps of ``ray up`` (IAM role, key pair, subnets, security
group, instance-type lookup) come later and are not run here; the ``_offline`` fixture
blocks boto3 and socket connections to keep it that way.

Ray does not check that a node type's ``0 <= min_workers <= max_workers``, so ``_validate``
adds that check.
"""

from __future__ import annotations

import copy
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

if TYPE_CHECKING:
    from collections.abc import Callable

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"

# Ray merges its defaults key by key: a command list missing here would come from
# ray/autoscaler/aws/defaults.yaml (a nightly Ray wheel, a dashboard on 0.0.0.0).
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
PRIVATE_PORTS = (8265, 5000)  # Ray dashboard / job API, MLflow

Config = dict[str, Any]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any boto3 import or socket connection fail during a test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during an offline test: {args!r}")

    for name in ("boto3", "botocore"):
        # A None entry in sys.modules makes `import boto3` raise ImportError.
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def config() -> Config:
    with CLUSTER_YAML.open() as f:
        loaded: Config = yaml.safe_load(f)
    return loaded


def _check_node_type_bounds(cfg: Config) -> None:
    for name, node_type in cfg["available_node_types"].items():
        low, high = node_type["min_workers"], node_type["max_workers"]
        if not 0 <= low <= high:
            raise ValueError(
                f"node type {name!r}: need 0 <= min_workers <= max_workers, "
                f"got min_workers={low!r}, max_workers={high!r}"
            )


def _validate(cfg: Config) -> Config:
    """Ray's validation as ``ray up`` runs it, plus the bounds Ray leaves unchecked."""
    prepared = prepare_config(cfg)
    validate_config(prepared)
    _check_node_type_bounds(prepared)
    return prepared


def _worker_types(cfg: Config) -> dict[str, Config]:
    head = cfg["head_node_type"]
    return {k: v for k, v in cfg["available_node_types"].items() if k != head}


def _head_start_command(cfg: Config, needle: str) -> str:
    matches = [c for c in cfg["head_start_ray_commands"] if needle in c]
    assert len(matches) == 1, f"expected one head start command with {needle!r}: {matches}"
    return matches[0]


def test_ray_accepts_cluster_yaml(config: Config) -> None:
    prepared = _validate(config)
    assert prepared["provider"]["type"] == "aws"


def _set(*path: str, value: object) -> Callable[[Config], None]:
    def edit(cfg: Config) -> None:
        *parents, last = path
        for key in parents:
            cfg = cfg[key]
        cfg[last] = value

    return edit


def _delete(*path: str) -> Callable[[Config], None]:
    def edit(cfg: Config) -> None:
        *parents, last = path
        for key in parents:
            cfg = cfg[key]
        del cfg[last]

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        pytest.param(
            _set("max_worker", value=3),
            jsonschema.ValidationError,
            "max_worker",
            id="unknown-top-level-key",
        ),
        pytest.param(
            _set("head_node_type", value="cpu-head"),
            ValueError,
            "head_node_type",
            id="head-type-not-declared",
        ),
        pytest.param(
            _set("max_workers", value=-1),
            jsonschema.ValidationError,
            "minimum",
            id="negative-global-max-workers",
        ),
        pytest.param(
            _set("available_node_types", "gpu-1x", "max_workers", value=-1),
            ValueError,
            "gpu-1x",
            id="negative-node-type-max-workers",
        ),
        pytest.param(
            _set("available_node_types", "gpu-4x", "min_workers", value="1"),
            jsonschema.ValidationError,
            "not of type 'integer'",
            id="min-workers-wrong-type",
        ),
        pytest.param(
            _set("available_node_types", "gpu-1x", "min_workers", value=11),
            ValueError,
            "min_workers",
            id="min-workers-above-global-max",
        ),
        pytest.param(
            _set("available_node_types", "gpu-1x", "resources", "GPU", value=0.5),
            jsonschema.ValidationError,
            "not of type 'integer'",
            id="fractional-gpu-resource",
        ),
        pytest.param(
            _delete("available_node_types", "gpu-4x", "node_config"),
            jsonschema.ValidationError,
            "node_config",
            id="missing-node-config",
        ),
    ],
)
def test_broken_edit_is_rejected(
    config: Config,
    edit: Callable[[Config], None],
    error: type[Exception],
    match: str,
) -> None:
    broken = copy.deepcopy(config)
    edit(broken)
    with pytest.raises(error, match=match):
        _validate(broken)


def test_every_command_list_is_set_here(config: Config) -> None:
    missing = [key for key in COMMAND_KEYS if key not in config]
    assert not missing, f"Ray would fill these from its defaults: {missing}"
    prepared = _validate(config)
    commands = [c for key in COMMAND_KEYS for c in prepared[key]]
    assert not [c for c in commands if "0.0.0.0" in c or "ray-wheels" in c]


def test_head_runs_no_trials(config: Config) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    assert "InstanceMarketOptions" not in head["node_config"], "the head must be on-demand"


def test_gpu_worker_types(config: Config) -> None:
    workers = _worker_types(config)
    # Declared, not inferred: checkable offline, and they override what Ray detects.
    for name, node_type in workers.items():
        assert {"CPU", "GPU"} <= node_type["resources"].keys(), name
        assert node_type["min_workers"] == 0, f"{name}: idle GPUs cost money"
    gpus = [node_type["resources"]["GPU"] for node_type in workers.values()]
    assert min(gpus) == 1, "a single-GPU type for base-size models"
    assert max(gpus) >= 4, "a multi-GPU type for XLM-R large"


def test_gpu_workers_have_disk_for_checkpoints(config: Config) -> None:
    for name, node_type in _worker_types(config).items():
        (root,) = node_type["node_config"]["BlockDeviceMappings"]
        assert root["Ebs"]["VolumeSize"] >= 200, name
        assert root["Ebs"]["VolumeType"] == "gp3", name


def test_dashboard_listens_on_localhost_only(config: Config) -> None:
    start = _head_start_command(config, "ray start --head")
    assert re.search(r"--dashboard-host[= ](127\.0\.0\.1|localhost)\b", start)
    assert start == config["head_start_ray_commands"][-1]


def test_no_ingress_for_dashboard_or_mlflow(config: Config) -> None:
    permissions = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for permission in permissions:
        for port in PRIVATE_PORTS:
            opened = permission.get("IpProtocol") == "-1" or (
                permission.get("FromPort", 0) <= port <= permission.get("ToPort", -1)
            )
            assert not opened, f"port {port} opened by {permission}"


def test_mlflow_server_binds_private_ip(config: Config) -> None:
    server = _head_start_command(config, "mlflow server")
    assert "HEAD_IP=$(hostname -I | awk '{print $1}')" in server
    assert '--host "$HEAD_IP"' in server
    assert "0.0.0.0" not in server
    for flag in (
        "--port 5000",
        "--workers 1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false",
    ):
        assert flag in server
    assert '--artifacts-destination "s3://$RAYSTILTS_BUCKET/mlflow"' in server
    # Detached, so the `ray start --head` command after it still runs.
    assert "nohup mlflow server" in server
    assert re.search(r"< /dev/null &", server)


def test_setup_installs_the_checkout(config: Config) -> None:
    assert config["file_mounts"]["~/raystilts"] == "."
    assert any("pip install -e ~/raystilts" in c for c in config["setup_commands"])
