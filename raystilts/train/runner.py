"""The chain runner: train the phases of a chain in order, then the target, then evaluate it.

    metrics = run_chain(plan, base_model="path/or/hub-id", store=store, settings=TrainSettings(),
                        report=print)

Plain PyTorch, rank-aware and Ray-free: under Ray Train the process group already exists and
the model is wrapped in DDP; alone it runs in one process. The encoder is carried from phase to
phase; each phase gets a fresh head chosen by its task kind (raystilts.train.models: Hugging Face's
``AutoModelFor...`` classes, so any family works; decoder-only models for classification and
multiple choice). Every task kind trains and evaluates here (metrics: the kind's ``evaluate``,
raystilts.kinds).
A target without training data (zero-shot retrieval) is not trained: the chain's
intermediate phases run, then its encoder is evaluated.

Throughput: length-grouped batches with dynamic padding, no host sync inside the step loop
(losses and token counts accumulate on the device and are read at evaluation points only),
bf16 autocast on GPUs that support it.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from raystilts.core.schema import AVG, MIX, PHASE_SEP, chain_name, metric_key
from raystilts.core.space import TRAINING_DEFAULTS, ChainPlanSpec, MixtureSettings
from raystilts.data.features import (
    Features,
    FeatureStore,
    batches,
    collate,
    dev_language,
    eval_batches,
)
from raystilts.data.packing import pack, packable, position_start
from raystilts.kinds import get_kind
from raystilts.metrics import scores as metrics_lib
from raystilts.tasks.catalog import TaskSpec, selection_key
from raystilts.train.accel import adamw, autocast, bf16_active, to_device
from raystilts.train.checkpointing import BestCheckpoint, CheckpointChoice
from raystilts.train.distributed_eval import gather_languages, languages_for_rank, sync_weights
from raystilts.train.mixture import MultiTaskModel, TaskSampler, mixture_name, mixture_weights
from raystilts.train.models import build_model, encoder_of, encoder_state, unwrap
from raystilts.train.prefix_cache import (
    PhaseKey,
    PrefixCache,
    Turn,
    prefix_keys,
    settings_fingerprint,
)

__all__ = [
    "ChainPlan",
    "DivergedError",
    "Phase",
    "TrainSettings",
    "build_model",
    "evaluate",
    "run_chain",
    "selection_key",
]

Report = Callable[[dict[str, float]], None]
_T = TypeVar("_T")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the trial is recorded as diverged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One phase: a task, or a multi-task mixture of ``task`` and ``also`` whose optimizer
    steps are drawn from the tasks with ``sampling`` weights (raystilts.train.mixture)."""

    task: TaskSpec
    lr: float
    steps: int
    also: tuple[TaskSpec, ...] = ()
    sampling: Literal["proportional", "temperature"] = "temperature"
    temperature: float = 2.0
    size_cap: int | None = None

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return (self.task, *self.also)

    @property
    def name(self) -> str:
        return mixture_name([t.name for t in self.tasks])


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainPlan:
    """Intermediate phases in order, then the target phase; evaluation languages of the target."""

    phases: tuple[Phase, ...]
    target: Phase
    eval_every: int
    eval_languages: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        if self.target.also:
            raise ValueError(f"ChainPlan: the target phase {self.target.name} cannot be a mixture")

    @property
    def name(self) -> str:
        return chain_name([p.name for p in self.phases], self.target.task.name)

    @classmethod
    def from_spec(
        cls,
        spec: ChainPlanSpec,
        *,
        task: Callable[[str], TaskSpec],
        mixture: MixtureSettings,
        languages: Sequence[str],
        seed: int,
    ) -> ChainPlan:
        """The runnable plan of a sampled chain (``raystilts.core.space.ChainPlanSpec``, task
        names only: what the search samples and ships to its workers). ``task`` resolves a
        name (with its data-dependent labels); a ``+``-joined phase is a mixture sampled as
        ``mixture`` says; a target without training data gets no steps: it is evaluated."""

        def phase(name: str, lr: float, steps: int) -> Phase:
            first, *also = (task(t) for t in name.split(MIX))
            return Phase(
                task=first,
                also=tuple(also),
                lr=lr,
                steps=steps,
                sampling=mixture.sampling,
                temperature=mixture.temperature,
                size_cap=mixture.size_cap,
            )

        target = task(spec.target.task)
        return cls(
            phases=tuple(phase(p.task, p.lr, p.steps) for p in spec.phases),
            target=Phase(
                task=target,
                lr=spec.target.lr,
                steps=int(spec.target.steps) if target.has_train else 0,
            ),
            eval_every=spec.eval_every,
            eval_languages=tuple(languages),
            seed=seed,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSettings:
    batch_size: int = TRAINING_DEFAULTS.batch_size
    eval_batch_size: int = 256
    warmup_ratio: float = TRAINING_DEFAULTS.warmup_ratio
    weight_decay: float = TRAINING_DEFAULTS.weight_decay
    max_grad_norm: float = 1.0
    grad_accum: int = 1  # micro-batches per optimizer step (keeps the effective batch fixed)
    bf16: bool = True  # used only where the device supports it
    bf16_cpu: bool = False  # bf16 on CPUs with native bf16 too (raystilts.train.accel: opt-in)
    compile: bool = False  # torch.compile each phase's model (its compile time counts in the phase)
    # per-token-label batches (tagging, MLM) packed into fuller rows where the family supports
    # it: the same loss without computing pad slots (raystilts.data.packing)
    pack: bool = True
    # hidden layer mean-pooled for retrieval; None: the middle layer, as XTREME (negative: from
    # the top, -1 = last)
    retrieval_layer: int | None = None
    # the target weights a chain is scored with: its best English dev evaluation point (jiant's
    # and XTREME's recipe) or its last step (raystilts.train.checkpointing)
    checkpoint: CheckpointChoice = TRAINING_DEFAULTS.checkpoint
    # POS-style tag sets (UDPOS): seqeval 0.0.x's reading reproduces XTREME's published numbers
    pos_scheme: metrics_lib.TaggingScheme = TRAINING_DEFAULTS.pos_scheme


@dataclass(slots=True, kw_only=True)
class Dist:
    """Where this process sits in the data-parallel group."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls) -> Dist:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        if torch.cuda.is_available():
            local = rank % torch.cuda.device_count()
            torch.cuda.set_device(local)
            return cls(rank=rank, world_size=world, device=torch.device("cuda", local))
        return cls(rank=rank, world_size=world)

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


_encoder_state = encoder_state  # the name tests and older callers use


def _optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(
            p
        )
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return adamw(groups, lr=lr)


def _autocast(device: torch.device, bf16: bool, cpu: bool = False) -> Any:
    return autocast(device, bf16, cpu=cpu)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Eval:
    """What a kind's evaluate needs besides the task and its features
    (:class:`raystilts.kinds.EvalContext`)."""

    model: nn.Module  # unwrapped, in eval mode
    store: FeatureStore
    settings: TrainSettings
    device: torch.device
    pad_id: int

    @property
    def tokenizer_dir(self) -> Path:
        return self.store.tokenizer_dir

    @property
    def train_batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def pos_scheme(self) -> metrics_lib.TaggingScheme:
        return self.settings.pos_scheme

    def outputs(
        self, feats: Features, *, batch_size: int | None = None, mlm: Any = None
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor], Any]]:
        """(row indices, CPU batch, model output) per evaluation batch, shortest rows first."""
        size = batch_size or self.settings.eval_batch_size
        for idx in eval_batches(feats.lengths, batch_size=size):
            batch = collate(feats, idx, pad_id=self.pad_id, mlm=mlm)
            inputs = to_device(
                {
                    k: v
                    for k, v in batch.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")
                },
                self.device,
            )
            with _autocast(self.device, self.settings.bf16, self.settings.bf16_cpu):
                yield idx, batch, self.model(**inputs)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: TaskSpec,
    store: FeatureStore,
    split: str,
    lang: str,
    *,
    settings: TrainSettings,
    device: torch.device,
    pad_id: int,
    dev: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Metrics of ``task`` on one (split, language), as its kind scores them
    (:meth:`raystilts.kinds.Kind.evaluate`).
    ``dev``: this language's dev metrics when scoring test (BUCC applies their threshold)."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    ev = _Eval(model=inner, store=store, settings=settings, device=device, pad_id=pad_id)
    try:
        feats = store.load(task, split, lang)
        return get_kind(task.kind).evaluate(ev, task, feats, lang, dev or {})
    finally:
        inner.train(was_training)


@dataclass(slots=True, kw_only=True)
class _PhaseRows:
    """The training rows of a phase's tasks and the batches each task is at: a mixture draws
    each optimizer step's task (every rank the same sequence), and each task keeps its own
    epochs of length-grouped batches."""

    names: list[str]
    feats: dict[str, Features]
    maskers: dict[str, Any]  # a kind's per-batch transform (MLM masking), or None
    sampler: TaskSampler | None  # None: one task
    seed: int
    epoch: dict[str, int] = field(default_factory=dict)
    plans: dict[str, list[list[int]]] = field(default_factory=dict)
    # where packed rows' positions start for this model (raystilts.data.packing), None: padded
    positions: int | None = None
    limit: int = 0  # the most tokens a packed row may hold (the model's positions)

    @classmethod
    def load(cls, phase: Phase, *, store: FeatureStore, dist: Dist, seed: int) -> _PhaseRows:
        feats = {t.name: store.load_train(t) for t in phase.tasks}
        # each rank masks its MLM batches with its own seed
        maskers = {
            t.name: get_kind(t.kind).masker(store.tokenizer_dir, seed=seed * 7919 + dist.rank)
            for t in phase.tasks
        }
        sampler = (
            TaskSampler(
                weights=mixture_weights(
                    {n: len(f) for n, f in feats.items()},
                    sampling=phase.sampling,
                    temperature=phase.temperature,
                    size_cap=phase.size_cap,
                ),
                rng=random.Random(seed),
            )
            if phase.also
            else None
        )
        names = [t.name for t in phase.tasks]
        return cls(names=names, feats=feats, maskers=maskers, sampler=sampler, seed=seed)

    def draw(self) -> str:
        """The task of the next optimizer step."""
        return self.sampler.draw() if self.sampler is not None else self.names[0]

    def next_batch(
        self, name: str, *, settings: TrainSettings, dist: Dist, pad_id: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Task ``name``'s next batch for this rank, on the device, packed (padding left out of
        the compute) where :attr:`positions` allows, and its real (non-pad) token count."""
        if not self.plans.get(name):
            epoch = self.epoch.get(name, 0)
            mixed = self.sampler is not None
            self.plans[name] = batches(
                self.feats[name].lengths,
                batch_size=settings.batch_size,
                seed=self.seed * 97 + self.names.index(name) if mixed else self.seed,
                epoch=epoch,
                rank=dist.rank,
                world_size=dist.world_size,
            )
            self.epoch[name] = epoch + 1
        idx = self.plans[name].pop()
        batch = collate(self.feats[name], idx, pad_id=pad_id, mlm=self.maskers.get(name))
        # counted while the batch is still on the host: never a device sync
        tokens = int(batch["attention_mask"].sum())
        if self.positions is not None and packable(batch):
            batch = pack(batch, position_start=self.positions, limit=self.limit, pad_id=pad_id)
        return to_device(batch, dist.device), tokens


def _packed_positions(model: nn.Module, pad_id: int) -> int | None:
    """Where a packed row's sequences start their positions for ``model``'s family, or None
    when the family is not known to honour packed rows (raystilts.data.packing)."""
    config = getattr(encoder_of(model), "config", None)
    model_type = str(getattr(config, "model_type", ""))
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "flash_attention_2", "eager"):
        return None
    return position_start(model_type, pad_id=pad_id)


def _backward(
    model: nn.Module,
    step_model: Callable[..., Any],  # ``model``, or its torch.compile
    batch: Mapping[str, torch.Tensor],
    *,
    task: str | None,
    last: bool,
    settings: TrainSettings,
    dist: Dist,
) -> torch.Tensor:
    """Forward and backward of one micro-batch (``task``: a mixture's task of the step);
    returns its loss, scaled for gradient accumulation and detached."""
    # DDP all-reduces gradients on the last micro-batch of a step only
    sync: Any = nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel) and not last:
        sync = model.no_sync()
    with sync:
        with _autocast(dist.device, settings.bf16, settings.bf16_cpu):
            out = step_model(task, **batch) if task is not None else step_model(**batch)
            loss = out.loss / settings.grad_accum
        loss.backward()
    return loss.detach()


def _train_phase(
    model: nn.Module,
    phase: Phase,
    *,
    store: FeatureStore,
    settings: TrainSettings,
    dist: Dist,
    seed: int,
    pad_id: int,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    eval_every: int = 0,
) -> dict[str, float]:
    """Train ``phase.steps`` optimizer steps; returns throughput figures of the phase."""
    from transformers import get_linear_schedule_with_warmup

    rows = _PhaseRows.load(phase, store=store, dist=dist, seed=seed)
    if settings.pack:
        rows.positions = _packed_positions(model, pad_id)
        rows.limit = store.model_limit or store.max_length
    opt = _optimizer(model, lr=phase.lr, weight_decay=settings.weight_decay)
    sched = get_linear_schedule_with_warmup(
        opt, math.ceil(settings.warmup_ratio * phase.steps), phase.steps
    )
    model.train()
    step_model = torch.compile(model) if settings.compile else model
    torch.manual_seed(seed * 7919 + dist.rank)  # dropout masks differ across ranks
    loss_sum = torch.zeros((), device=dist.device)
    tokens = 0
    micro = 0
    t0 = time.perf_counter()
    for step in range(1, phase.steps + 1):
        name = rows.draw()
        for part in range(settings.grad_accum):
            batch, real = rows.next_batch(name, settings=settings, dist=dist, pad_id=pad_id)
            loss_sum += _backward(
                model,
                step_model,
                batch,
                task=name if rows.sampler is not None else None,
                last=part == settings.grad_accum - 1,
                settings=settings,
                dist=dist,
            )
            tokens += real
            micro += 1
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if on_eval is not None and eval_every and step % eval_every == 0:
            mean_loss = _checked_loss(loss_sum, micro / settings.grad_accum, phase, dist)
            on_eval(step, {"train/loss": mean_loss})
    elapsed = time.perf_counter() - t0
    mean_loss = _checked_loss(loss_sum, micro / settings.grad_accum, phase, dist)
    return {
        "train/loss": mean_loss,
        "train/tokens_per_s": tokens / max(elapsed, 1e-9),
        "train/seconds": elapsed,
    }


def _checked_loss(loss_sum: torch.Tensor, steps: float, phase: Phase, dist: Dist) -> float:
    """Mean loss over all ranks; every rank sees the same value, so all stop together on NaN."""
    if dist.world_size > 1:
        loss_sum = loss_sum.clone()
        torch.distributed.all_reduce(loss_sum)
        loss_sum /= dist.world_size
    value = float(loss_sum.item()) / max(steps, 1.0)  # the only host sync: at evaluation points
    if not math.isfinite(value):
        raise DivergedError(f"phase {phase.name}: training loss is {value} (lr {phase.lr:g})")
    return value


def _cache_io(call: Callable[[], _T], fallback: _T) -> _T:
    """A prefix-cache read or write on rank 0: a storage error costs a retrain, never the
    trial (the other ranks wait in a collective meanwhile, so rank 0 must not die here)."""
    try:
        return call()
    except Exception as e:  # any storage/IO error is logged and treated as a miss
        logging.getLogger(__name__).warning("prefix cache unavailable (%s); training instead", e)
        return fallback


def _prefix_keys(
    plan: ChainPlan, store: FeatureStore, settings: TrainSettings, dist: Dist, model_key: str
) -> list[str]:
    """The nested prefix-cache keys of ``plan``'s intermediate phases."""
    if not model_key:
        raise ValueError("run_chain: a prefix_cache needs the base model's model_fingerprint")
    bf16 = bf16_active(dist.device, settings.bf16, cpu=settings.bf16_cpu)
    return prefix_keys(
        base_model_fingerprint=model_key,
        phases=[
            PhaseKey(
                # a mixture's key names its tasks and sampling; a single task's stays as it was
                task=(
                    p.name
                    if not p.also
                    else f"{p.name}|{p.sampling},T={p.temperature!r},cap={p.size_cap}"
                ),
                lr=p.lr,
                steps=p.steps,
                data_fingerprint="+".join(
                    path.name for t in p.tasks for path in store.train_paths(t)
                ),
            )
            for p in plan.phases
        ],
        seed=plan.seed,
        settings_fingerprint=settings_fingerprint(
            batch_size=settings.batch_size,
            grad_accum=settings.grad_accum,
            warmup_ratio=settings.warmup_ratio,
            weight_decay=settings.weight_decay,
            max_grad_norm=settings.max_grad_norm,
            world_size=dist.world_size,
            bf16=bf16,
            packed=settings.pack,
        ),
    )


def _wrap(model: nn.Module, dist: Dist) -> nn.Module:
    model.to(dist.device)
    if dist.world_size > 1:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=ids,
            # a mixture uses one head per step: the others get no gradient
            find_unused_parameters=getattr(model, "needs_unused_parameter_search", False),
        )
    return model


def _phase_model(
    base_model: str,
    phase: Phase,
    encoder: Mapping[str, torch.Tensor] | None,
    *,
    seed: int,
    pad_id: int,
) -> nn.Module:
    if phase.also:
        return MultiTaskModel.from_pretrained(
            base_model, phase.tasks, encoder_state=encoder, seed=seed, pad_id=pad_id
        )
    return build_model(base_model, phase.task, encoder, seed=seed, pad_id=pad_id)


def _evaluate_target(
    plan: ChainPlan,
    score: Callable[..., dict[str, float]],
    model: nn.Module,
    dist: Dist | None = None,
) -> dict[str, float]:
    """Dev, then test, of every evaluation language the task has the split in (a language's
    dev metrics go to its test evaluation: BUCC's threshold), plus the mean over languages
    of each metric (``avg``; not of a BUCC threshold). Under DDP (``dist``) each rank scores
    its share of the languages (:mod:`raystilts.train.distributed_eval`; a collective) and
    rank 0 alone gets the metrics (the others: an empty dict)."""
    target = plan.target.task
    dist = dist or Dist()
    scored: dict[str, dict[str, dict[str, float]]] = {}  # language -> split -> metrics
    for lang in languages_for_rank(plan.eval_languages, rank=dist.rank, world_size=dist.world_size):
        scored[lang] = {}
        for split in ("dev", "test"):
            if split in target.splits(lang):
                dev = scored[lang].get("dev")
                scored[lang][split] = score(model, target, split, lang, dev)
    every = gather_languages(scored, rank=dist.rank, world_size=dist.world_size)
    if every is None:
        return {}
    out: dict[str, float] = {}
    for split in ("dev", "test"):
        per_lang = {  # in the plan's language order, whichever rank scored them
            lang: every[lang][split] for lang in plan.eval_languages if split in every[lang]
        }
        for lang, metrics in per_lang.items():
            out.update({metric_key(split, target.name, lang, m): v for m, v in metrics.items()})
        names = sorted({m for d in per_lang.values() for m in d} - {"threshold"})
        for m in names:
            values = [d[m] for d in per_lang.values() if m in d]
            out[metric_key(split, target.name, AVG, m)] = sum(values) / len(values)
    return out


@dataclass(slots=True, kw_only=True)
class _ChainRun:
    """What the steps of one :func:`run_chain` share; ``info`` collects the intermediate
    phases' figures (``phase{i}/...``) for the final report."""

    plan: ChainPlan
    base_model: str
    store: FeatureStore
    settings: TrainSettings
    dist: Dist
    pad_id: int
    prefix_cache: PrefixCache | None
    info: dict[str, float] = field(default_factory=dict)

    def score(
        self,
        model: nn.Module,
        task: TaskSpec,
        split: str,
        lang: str,
        dev: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        return evaluate(
            model,
            task,
            self.store,
            split,
            lang,
            settings=self.settings,
            device=self.dist.device,
            pad_id=self.pad_id,
            dev=dev,
        )

    def restore_prefix(self, keys: list[str]) -> tuple[int, dict[str, torch.Tensor] | None]:
        """(phases loaded, their encoder) of the deepest cached prefix: rank 0 reads the cache
        and records what the trial that trained them measured; every rank learns the depth."""
        depth: int = 0
        encoder: dict[str, torch.Tensor] | None = None
        cache = self.prefix_cache
        if cache is not None and self.dist.rank == 0:
            miss: tuple[int, dict[str, torch.Tensor] | None] = (0, None)
            depth, encoder = _cache_io(functools.partial(cache.longest_hit, keys), miss)
            for i in range(depth):
                meta = cache.meta(keys[i]) or {}
                self.info[f"phase{i}/dev_en"] = float(meta.get("dev_en", math.nan))  # type: ignore[arg-type]
                self.info[f"phase{i}/cached"] = 1.0
        if self.dist.world_size > 1:
            shared = [depth]
            torch.distributed.broadcast_object_list(shared, src=0)
            depth = int(shared[0])
        return depth, encoder

    def await_prefix(self, i: int, keys: list[str]) -> tuple[bool, dict[str, torch.Tensor] | None]:
        """Before training intermediate phase ``i``: ``(True, encoder)`` when its prefix is in
        the cache now, or once the trial (on any node) that holds its claim has put it there;
        ``(False, None)`` when this trial trains it (holding the claim). Rank 0 decides and
        tells the other ranks every ``poll_s`` (no collective waits longer); only rank 0's
        encoder is meaningful, as in :meth:`restore_prefix`."""
        cache, dist = self.prefix_cache, self.dist
        if cache is None:
            return False, None
        t0 = time.monotonic()
        waited = False
        while True:
            turn: Turn = "train"
            encoder: dict[str, torch.Tensor] | None = None
            if dist.rank == 0:
                untrained: tuple[Turn, dict[str, torch.Tensor] | None] = ("train", None)
                turn, encoder = _cache_io(functools.partial(cache.turn, keys[i]), untrained)
            if dist.world_size > 1:
                shared = [turn]
                torch.distributed.broadcast_object_list(shared, src=0)
                turn = shared[0]
            if turn != "wait":
                break
            waited = True
            time.sleep(cache.poll_s)
        if waited and dist.rank == 0:
            cache.stats.waits += 1
            cache.stats.waited_s += time.monotonic() - t0
        if turn != "cached":
            return False, None
        if dist.rank == 0:
            meta = cache.meta(keys[i]) or {}
            self.info[f"phase{i}/dev_en"] = float(meta.get("dev_en", math.nan))  # type: ignore[arg-type]
            self.info[f"phase{i}/cached"] = 1.0
        return True, encoder

    def train_intermediate(
        self, i: int, encoder: dict[str, torch.Tensor] | None, keys: list[str]
    ) -> dict[str, torch.Tensor]:
        """Train intermediate phase ``i`` from ``encoder``; rank 0 scores it on its dev split
        (a mixture: the mean over its tasks) and stores the prefix. Returns its encoder."""
        phase, dist, info = self.plan.phases[i], self.dist, self.info
        if not all(t.has_train for t in phase.tasks):
            raise ValueError(
                f"phase {phase.name}: a task without training data cannot be an intermediate "
                "phase (zero-shot retrieval tasks are targets only)"
            )
        seed = self.plan.seed * 1000 + i
        model = _wrap(
            _phase_model(self.base_model, phase, encoder, seed=seed, pad_id=self.pad_id), dist
        )
        stats = _train_phase(
            model,
            phase,
            store=self.store,
            settings=self.settings,
            dist=dist,
            seed=seed,
            pad_id=self.pad_id,
        )
        info.update({f"phase{i}/{k}": v for k, v in stats.items()})
        if dist.rank == 0:
            inner = unwrap(model)
            devs = []
            for t in phase.tasks:
                head = inner.task_model(t.name) if phase.also else model  # type: ignore[operator]
                devs.append(self.score(head, t, "dev", dev_language(t))[t.metric])
                if phase.also:
                    info[f"phase{i}/dev_en/{t.name}"] = devs[-1]
            info[f"phase{i}/dev_en"] = sum(devs) / len(devs)
        trained = encoder_state(model)
        if self.prefix_cache is not None and dist.rank == 0:
            dev = info[f"phase{i}/dev_en"]
            meta = {
                "chain_prefix": PHASE_SEP.join(p.name for p in self.plan.phases[: i + 1]),
                "dev_en": dev if math.isfinite(dev) else None,
            }
            _cache_io(functools.partial(self.prefix_cache.put, keys[i], trained, meta), None)
        return trained

    def train_target(
        self, encoder: dict[str, torch.Tensor] | None, report: Report
    ) -> tuple[nn.Module, dict[str, float], BestCheckpoint | None]:
        """The target model trained from ``encoder`` (not trained when the target has no
        training data), its training figures, and the best English dev checkpoint when the
        settings keep it; ``report`` gets English dev at every ``eval_every`` steps."""
        plan, dist = self.plan, self.dist
        target = plan.target.task
        key = metric_key("dev", target.name, "en", target.metric)
        seed = plan.seed * 1000 + 999
        model = build_model(
            self.base_model,
            target,
            encoder,
            seed=seed,
            pad_id=self.pad_id,
            retrieval_layer=self.settings.retrieval_layer,
        )
        # a target without training data is evaluated as the chain left its encoder
        model = _wrap(model, dist) if target.has_train else model.to(dist.device)
        best = BestCheckpoint() if self.settings.checkpoint == "best_en_dev" else None

        def on_eval(step: int, extra: dict[str, float]) -> None:
            if step == plan.target.steps:
                return  # the final evaluation reports this point with every language
            metrics = {"target_step": float(step), **extra}
            if dist.rank == 0:
                metrics[key] = self.score(model, target, "dev", "en")[target.metric]
                if best is not None:
                    best.consider(step, metrics[key], unwrap(model))
            dist.barrier()
            report(metrics)

        if not target.has_train:
            return model, {}, best
        stats = _train_phase(
            model,
            plan.target,
            store=self.store,
            settings=self.settings,
            dist=dist,
            seed=seed,
            pad_id=self.pad_id,
            on_eval=on_eval,
            eval_every=plan.eval_every,
        )
        return model, stats, best

    def final_metrics(
        self,
        model: nn.Module,
        stats: Mapping[str, float],
        best: BestCheckpoint | None,
        final_model_dir: Path | None,
    ) -> dict[str, float]:
        """Everything the chain reports last; rank 0 alone restores the kept checkpoint and
        saves the model, every rank evaluates its share of the languages (rank 0 gathers)."""
        plan = self.plan
        target = plan.target.task
        final: dict[str, float] = {
            "target_step": float(plan.target.steps),
            **self.info,
            **{f"target/{k}": v for k, v in stats.items()},
        }
        # with no earlier evaluation point the last step is kept
        if self.dist.rank == 0 and best is not None and best.step is not None:
            dev = self.score(model, target, "dev", "en")[target.metric]
            best.consider(plan.target.steps, dev, unwrap(model))
            best.restore(unwrap(model))
        sync_weights(model, world_size=self.dist.world_size)  # every rank scores rank 0's
        scores = _evaluate_target(plan, self.score, model, self.dist)
        if self.dist.rank != 0:
            return final
        kept = best.step if best is not None and best.step is not None else plan.target.steps
        final["target/kept_step"] = float(kept)
        if self.prefix_cache is not None:
            final.update(self.prefix_cache.stats.as_metrics())
        final.update(scores)
        if final_model_dir is not None:
            unwrap(model).save_pretrained(str(final_model_dir))  # type: ignore[operator]
        return final


def run_chain(
    plan: ChainPlan,
    *,
    base_model: str,
    store: FeatureStore,
    settings: TrainSettings,
    report: Report,
    pad_id: int,
    dist: Dist | None = None,
    final_model_dir: Path | None = None,
    prefix_cache: PrefixCache | None = None,
    model_fingerprint: str = "",
) -> dict[str, float]:
    """Run ``plan``; ``report`` gets English dev metrics every ``eval_every`` target steps and,
    last, every metric (``{split}/{task}/{lang}/{metric}``). Only rank 0's values are meaningful.
    With ``final_model_dir``, rank 0 saves the trained target model there (``save_pretrained``)
    before the last report.

    With ``prefix_cache`` (and ``model_fingerprint``, a content key of the base model), the
    deepest intermediate prefix of the chain already trained by any trial (same base model,
    phases, hyperparameters, seed, data and settings) is loaded instead of trained, and every
    prefix this chain trains is stored. Rank 0 reads and writes the cache; under DDP the other
    ranks receive the loaded encoder when the next model is wrapped (DDP broadcasts rank 0's
    parameters). Each phase is seeded from ``plan.seed`` and its index, so a loaded prefix is
    the encoder this chain would have trained.
    """
    dist = dist or Dist.current()
    run = _ChainRun(
        plan=plan,
        base_model=base_model,
        store=store,
        settings=settings,
        dist=dist,
        pad_id=pad_id,
        prefix_cache=prefix_cache,
    )
    keys: list[str] = []
    depth = 0
    encoder: dict[str, torch.Tensor] | None = None
    if prefix_cache is not None and plan.phases:
        keys = _prefix_keys(plan, store, settings, dist, model_fingerprint)
        depth, encoder = run.restore_prefix(keys)
    for i in range(depth, len(plan.phases)):
        cached, waited_for = run.await_prefix(i, keys)  # another trial's, once it is trained
        encoder = waited_for if cached else run.train_intermediate(i, encoder, keys)
    model, stats, best = run.train_target(encoder, report)
    final = run.final_metrics(model, stats, best, final_model_dir)
    dist.barrier()
    report(final)
    logging.getLogger(__name__).debug("chain %s done", plan.name)
    return final
