"""Multi-task mixture phases: several English tasks trained together on one shared encoder.

    weights = mixture_weights({"mini_mnli": 4000, "mini_qqp": 1000}, sampling="temperature",
                              temperature=2.0, size_cap=2**16)     # {'mini_mnli': 0.667, ...}
    sampler = TaskSampler(weights=weights, rng=random.Random(seed))  # same seed on every rank
    model = MultiTaskModel.from_pretrained(base_model, tasks, encoder_state=encoder, seed=seed)
    ddp = DistributedDataParallel(model, find_unused_parameters=model.needs_unused_parameter_search)
    for step in range(steps):
        task = sampler.draw()                       # one task per optimizer step
        loss = ddp(task, **batch_of(task)).loss     # that task's Hugging Face model and head
    encoder = model.encoder_state()                 # what the next phase loads

A phase is one task or a mixture, so a search can ask the ordering question: the same tasks in
sequence (``a>b>target``), in the other order, or mixed together (``a+b>target``). Sampling is
as in T5 and multilingual multi-task training: proportional to each task's (capped) size, or
to its size to the power ``1/T`` (temperature sampling flattens the mixture towards uniform, so
a small task is not drowned by a large one).

Heads are chosen by task type exactly as a single-task phase chooses them
(:func:`raystilts.train.models.build_model`): each task of any trainable type (classification,
multiple choice, QA, tagging, MLM) gets its own Hugging Face model, and all of them share one
encoder module object, so its parameters exist (and are optimised) once.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from raystilts.core.schema import MIX, PHASE_SEP

if TYPE_CHECKING:
    import numpy as np

    from raystilts.tasks.catalog import TaskSpec

__all__ = [
    "MIX_SEPARATOR",
    "MultiTaskModel",
    "Sampling",
    "TaskSampler",
    "mixture_name",
    "mixture_weights",
]

Sampling = Literal["proportional", "temperature"]
SAMPLINGS: tuple[Sampling, ...] = ("proportional", "temperature")
# joins the tasks of a mixed phase in a chain name (``a+b>target``); raystilts.analysis.tables splits on it
MIX_SEPARATOR = MIX  # kept under its old name


def mixture_weights(
    sizes: Mapping[str, int],
    *,
    sampling: Sampling,
    temperature: float = 2.0,
    size_cap: int | None = None,
) -> dict[str, float]:
    """Probability of drawing each task: ``p_t ∝ min(n_t, cap)`` (proportional) or
    ``p_t ∝ min(n_t, cap) ** (1 / T)`` (temperature; ``T = 1`` is proportional, ``T → ∞``
    uniform). ``size_cap`` (T5's "artificial limit") stops one huge task from dominating.

    >>> mixture_weights({"a": 100, "b": 400}, sampling="proportional")
    {'a': 0.2, 'b': 0.8}
    >>> mixture_weights({"a": 100, "b": 400}, sampling="temperature", temperature=2.0)
    {'a': 0.3333333333333333, 'b': 0.6666666666666666}
    >>> mixture_weights({"a": 100, "b": 400}, sampling="proportional", size_cap=100)
    {'a': 0.5, 'b': 0.5}
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if size_cap is not None and (
        isinstance(size_cap, bool) or not isinstance(size_cap, int) or size_cap < 1
    ):
        raise ValueError(f"size_cap must be an integer >= 1 or None (no cap), got {size_cap!r}")
    if not sizes:
        raise ValueError("a mixture needs at least one task, got no sizes")
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"task {name!r}: size must be an integer >= 1 (its number of training "
                f"examples), got {n!r}; drop the task from the mixture or give it data"
            )
    power = 1.0 / temperature if sampling == "temperature" else 1.0
    raw = {
        name: float(min(n, size_cap) if size_cap is not None else n) ** power
        for name, n in sizes.items()
    }
    total = sum(raw.values())
    return {name: w / total for name, w in raw.items()}


def mixture_name(tasks: Sequence[str]) -> str:
    """The chain-name label of a phase: ``"mini_mnli+mini_qqp"`` for a mixture, the task alone
    otherwise (``mixture_name(["a", "b"]) == "a+b"``)."""
    if not tasks:
        raise ValueError("a phase needs at least one task, got none")
    bad = [t for t in tasks if MIX_SEPARATOR in t or PHASE_SEP in t]
    if bad:
        raise ValueError(f"task names may not contain '+' or '>', got {bad[0]!r}")
    return MIX_SEPARATOR.join(tasks)


class TaskSampler:
    """Draws the task of each optimizer step from fixed probabilities, with an RNG from outside.

    Every rank of a data-parallel group must build its sampler from the same weights (same
    order) and an RNG with the same seed, so all ranks draw the same sequence: each step then
    trains the same head everywhere, and DDP sees the same unused heads on every rank (their
    gradients stay ``None``, so the optimizer leaves them alone). ``rng`` is a
    :class:`random.Random` or a :class:`numpy.random.Generator`; only its ``random()`` is used.

    >>> s = TaskSampler(weights={"a": 0.25, "b": 0.75}, rng=random.Random(3))
    >>> [s.draw() for _ in range(6)]
    ['a', 'b', 'b', 'b', 'b', 'a']
    """

    def __init__(
        self, *, weights: Mapping[str, float], rng: random.Random | np.random.Generator
    ) -> None:
        if not weights:
            raise ValueError("TaskSampler needs at least one task, got empty weights")
        for name, w in weights.items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"task {name!r}: weight must be finite and >= 0, got {w!r}")
        total = sum(weights.values())
        if total <= 0:
            raise ValueError(f"weights must not all be zero, got {dict(weights)!r}")
        self.tasks: tuple[str, ...] = tuple(weights)
        self.weights: dict[str, float] = {t: w / total for t, w in weights.items()}
        self._cumulative = list(itertools.accumulate(self.weights.values()))
        self._cumulative[-1] = 1.0  # no rounding gap above the last task
        self._rng = rng

    def draw(self) -> str:
        """The task of the next optimizer step."""
        u = float(self._rng.random())
        # bisect_right: a task of weight 0 owns an empty interval and is never drawn
        i = bisect.bisect_right(self._cumulative, u)
        return self.tasks[min(i, len(self.tasks) - 1)]

    def __iter__(self) -> Iterator[str]:
        while True:
            yield self.draw()


class MultiTaskModel(nn.Module):
    """One Hugging Face task model per task, all sharing one encoder module object (the first
    model's; with BERT-style encoders the first that has every weight, e.g. the pooler).

    ``forward(task, **batch)`` runs that task's model and returns its output (with ``.loss``
    when ``labels`` are given). The encoder's parameters are one set of tensors, so they appear
    once in :meth:`parameters` and an optimizer updates them once per step, whichever head the
    step used. ``base_model_prefix`` and the ``encoder`` property mirror a Hugging Face model,
    so :func:`raystilts.train.runner._encoder_state` works on this model (plain or wrapped in DDP).

    Under DistributedDataParallel, wrap it with ``find_unused_parameters=True``
    (:attr:`needs_unused_parameter_search`): a step uses one head, and without the search DDP
    waits for gradients of the other heads that never come ("Expected to have finished
    reduction in the prior iteration"). Adding ``0 * head.sum()`` instead would make the unused
    heads' gradients zero rather than ``None``, and AdamW would then move them on steps that
    never used them (momentum and weight decay).
    """

    needs_unused_parameter_search: ClassVar[bool] = True
    base_model_prefix: ClassVar[str] = "encoder"

    def __init__(self, models: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("MultiTaskModel needs at least one task model, got none")
        for name in models:
            if not name or "." in name:
                raise ValueError(f"task name must be non-empty without '.', got {name!r}")
        from raystilts.train.models import encoder_of, replace_encoder

        keys: dict[str, set[str]] = {}
        for name, m in models.items():
            enc = encoder_of(m)
            if enc is m:
                raise ValueError(
                    f"task {name!r}: its model has no encoder under its base_model_prefix; "
                    "pass task models (raystilts.train.models.build_model)"
                )
            keys[name] = set(enc.state_dict())
        # the first encoder whose weights include every other's: with XLM-R all are equal; with
        # BERT only sequence classification builds the pooler, and its encoder serves both kinds
        owner = next((n for n in models if all(keys[n] >= k for k in keys.values())), None)
        if owner is None:
            names = list(keys.values())
            differ = sorted(set[str]().union(*names) - names[0].intersection(*names[1:]))[:3]
            raise ValueError(
                f"no encoder of tasks {list(models)!r} holds every weight of the others "
                f"(weights not in all: {differ}); mix tasks whose models share one encoder"
            )
        shared = encoder_of(models[owner])
        for m in models.values():
            replace_encoder(m, shared)
        self.tasks_models = nn.ModuleDict(dict(models))

    @classmethod
    def from_pretrained(
        cls,
        base_model: str,
        tasks: Sequence[TaskSpec],
        *,
        encoder_state: Mapping[str, torch.Tensor] | None = None,
        seed: int,
        pad_id: int | None = None,
    ) -> MultiTaskModel:
        """A fresh head per task on ``base_model`` (heads by task type, as in a single-task
        phase); the encoder of the last phase if ``encoder_state`` is given. Task ``j``'s head
        is initialised from seed ``seed + j``, so a mixture of one task has that task's head."""
        from raystilts.train.models import build_model

        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"a mixture lists each task once, got {names!r}")
        model = cls(
            {
                t.name: build_model(base_model, t, None, seed=seed + j, pad_id=pad_id)
                for j, t in enumerate(tasks)
            }
        )
        if encoder_state is not None:
            model.load_encoder(encoder_state)
        return model

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.tasks_models.keys())

    @property
    def encoder(self) -> nn.Module:
        """The shared encoder (the same object inside every task model)."""
        from raystilts.train.models import encoder_of

        return encoder_of(next(iter(self.tasks_models.values())))

    def task_model(self, task: str) -> nn.Module:
        """The Hugging Face model of ``task`` (shared encoder, own head): what
        :func:`raystilts.train.runner.evaluate` takes to score one task of the mixture."""
        if task not in self.tasks_models:
            raise ValueError(f"unknown task {task!r}; this mixture has {', '.join(self.tasks)}")
        return self.tasks_models[task]

    def forward(self, task: str, **batch: Any) -> Any:
        return self.task_model(task)(**batch)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of the shared encoder's weights, in the format of
        ``runner._encoder_state`` (what ``build_model(..., encoder_state)`` loads)."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    def load_encoder(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a previous phase's encoder into the shared encoder (same architecture; only a
        BERT-style pooler may be missing: raystilts.train.models.load_encoder_state)."""
        from raystilts.train.models import load_encoder_state

        load_encoder_state(self.encoder, state)
