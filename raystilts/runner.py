"""The chain runner: train the phases of a chain in order, then the target, then evaluate it.

    metrics = run_chain(plan, base_model="path/or/hub-id", store=store, settings=TrainSettings(),
                        report=print)

Plain PyTorch, rank-aware and Ray-free: under Ray Train the process group already exists and
the model is wrapped in DDP; alone it runs in one process. The encoder is carried from phase to
phase; each phase gets a fresh head chosen by its task type (Hugging Face's
``AutoModelFor{SequenceClassification,TokenClassification}``, so any encoder family works).

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
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from raystilts.data import FeatureStore, batches, collate, eval_batches
from raystilts.metrics import score
from raystilts.mixture import MultiTaskModel, TaskSampler, mixture_name, mixture_weights
from raystilts.prefix_cache import PhaseKey, PrefixCache, prefix_keys, settings_fingerprint
from raystilts.tasks import TaskSpec

__all__ = [
    "ChainPlan",
    "DivergedError",
    "Phase",
    "TrainSettings",
    "build_model",
    "evaluate",
    "run_chain",
]

Report = Callable[[dict[str, float]], None]
_T = TypeVar("_T")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the trial is recorded as diverged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One phase: a task, or a multi-task mixture of ``task`` and ``also`` whose optimizer
    steps are drawn from the tasks with ``sampling`` weights (raystilts.mixture)."""

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
        return ">".join([p.name for p in self.phases] + [self.target.task.name])


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSettings:
    batch_size: int = 32
    eval_batch_size: int = 256
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    grad_accum: int = 1  # micro-batches per optimizer step (keeps the effective batch fixed)
    bf16: bool = True  # used only where the device supports it


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


def build_model(
    base_model: str, task: TaskSpec, encoder_state: Mapping[str, torch.Tensor] | None, *, seed: int
) -> nn.Module:
    """Base model with a fresh head for ``task``; the encoder weights of the last phase if given."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights newly initialized" is the point of a new head
    hf_logging.disable_progress_bar()
    cls = (
        AutoModelForTokenClassification
        if task.kind == "tagging"
        else AutoModelForSequenceClassification
    )
    torch.manual_seed(seed)
    model = cls.from_pretrained(base_model, num_labels=task.num_labels)
    if model.config.pad_token_id is None:  # decoder-only models classify the last non-pad token
        model.config.pad_token_id = model.config.eos_token_id
    if encoder_state is not None:
        getattr(model, str(model.base_model_prefix)).load_state_dict(encoder_state)
    return model


def _encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    enc = getattr(inner, str(inner.base_model_prefix))
    return {k: v.detach().clone() for k, v in enc.state_dict().items()}


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
    return torch.optim.AdamW(groups, lr=lr, fused=torch.cuda.is_available())


def _autocast(device: torch.device, bf16: bool) -> Any:
    if bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


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
) -> dict[str, float]:
    """Metrics of ``task`` on one (split, language)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = inner.training
    inner.eval()
    feats = store.load(task, split, lang)
    gold: list[Any] = []
    pred: list[Any] = []
    for idx in eval_batches(feats.lengths, batch_size=settings.eval_batch_size):
        batch = collate(feats, idx, pad_id=pad_id)
        with _autocast(device, settings.bf16):
            logits = inner(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
        p = logits.argmax(-1).cpu()
        if task.kind == "tagging":
            for row, labels in enumerate(batch["labels"]):
                n = int(batch["attention_mask"][row].sum())
                gold.append(labels[:n].tolist())
                pred.append(p[row, :n].tolist())
        else:
            gold.extend(batch["labels"].tolist())
            pred.extend(p.tolist())
    inner.train(was_training)
    return score(task.kind, gold, pred)


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

    names = [t.name for t in phase.tasks]
    feats = {t.name: store.load(t, "train", "en") for t in phase.tasks}
    # a mixture draws each optimizer step's task; every rank draws the same sequence
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
    opt = _optimizer(model, lr=phase.lr, weight_decay=settings.weight_decay)
    sched = get_linear_schedule_with_warmup(
        opt, math.ceil(settings.warmup_ratio * phase.steps), phase.steps
    )
    model.train()
    torch.manual_seed(seed * 7919 + dist.rank)  # dropout masks differ across ranks
    loss_sum = torch.zeros((), device=dist.device)
    tokens = torch.zeros((), device=dist.device, dtype=torch.long)
    micro = 0
    epoch = dict.fromkeys(names, 0)
    plans: dict[str, list[list[int]]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for step in range(1, phase.steps + 1):
        name = sampler.draw() if sampler is not None else names[0]
        for part in range(settings.grad_accum):
            if not plans[name]:  # each task keeps its own epochs of length-grouped batches
                plans[name] = batches(
                    feats[name].lengths,
                    batch_size=settings.batch_size,
                    seed=seed * 97 + names.index(name) if sampler is not None else seed,
                    epoch=epoch[name],
                    rank=dist.rank,
                    world_size=dist.world_size,
                )
                epoch[name] += 1
            batch = {
                k: v.to(dist.device, non_blocking=True)
                for k, v in collate(feats[name], plans[name].pop(), pad_id=pad_id).items()
            }
            # DDP all-reduces gradients on the last micro-batch of a step only
            last = part == settings.grad_accum - 1
            sync: Any = nullcontext()
            if isinstance(model, nn.parallel.DistributedDataParallel) and not last:
                sync = model.no_sync()
            with sync:
                with _autocast(dist.device, settings.bf16):
                    out = model(name, **batch) if sampler is not None else model(**batch)
                    loss = out.loss / settings.grad_accum
                loss.backward()
            loss_sum += loss.detach()
            tokens += batch["attention_mask"].sum()
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
        "train/tokens_per_s": float(tokens.item()) / max(elapsed, 1e-9),
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
    bf16 = settings.bf16 and dist.device.type == "cuda" and torch.cuda.is_bf16_supported()
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
                data_fingerprint="+".join(store.path(t, "train", "en").name for t in p.tasks),
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
) -> nn.Module:
    if phase.also:
        return MultiTaskModel.from_pretrained(
            base_model, phase.tasks, encoder_state=encoder, seed=seed
        )
    return build_model(base_model, phase.task, encoder, seed=seed)


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
    encoder: dict[str, torch.Tensor] | None = None
    info: dict[str, float] = {}

    def score(model: nn.Module, task: TaskSpec, split: str, lang: str) -> dict[str, float]:
        return evaluate(
            model, task, store, split, lang, settings=settings, device=dist.device, pad_id=pad_id
        )

    keys: list[str] = []
    depth = 0
    if prefix_cache is not None and plan.phases:
        keys = _prefix_keys(plan, store, settings, dist, model_fingerprint)
        if dist.rank == 0:
            miss: tuple[int, dict[str, torch.Tensor] | None] = (0, None)
            depth, encoder = _cache_io(functools.partial(prefix_cache.longest_hit, keys), miss)
            for i in range(depth):  # what the trial that trained them measured
                meta = prefix_cache.meta(keys[i]) or {}
                info[f"phase{i}/dev_en"] = float(meta.get("dev_en", math.nan))  # type: ignore[arg-type]
                info[f"phase{i}/cached"] = 1.0
        if dist.world_size > 1:
            shared = [depth]
            torch.distributed.broadcast_object_list(shared, src=0)
            depth = int(shared[0])
    for i, phase in enumerate(plan.phases):
        if i < depth:
            continue
        model = _wrap(_phase_model(base_model, phase, encoder, seed=plan.seed * 1000 + i), dist)
        stats = _train_phase(
            model,
            phase,
            store=store,
            settings=settings,
            dist=dist,
            seed=plan.seed * 1000 + i,
            pad_id=pad_id,
        )
        info.update({f"phase{i}/{k}": v for k, v in stats.items()})
        if dist.rank == 0:  # a mixture: the mean over its tasks
            inner = (
                model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
            )
            devs = []
            for t in phase.tasks:
                head = inner.task_model(t.name) if phase.also else model  # type: ignore[operator]
                devs.append(score(head, t, "dev", "en")[t.metric])
                if phase.also:
                    info[f"phase{i}/dev_en/{t.name}"] = devs[-1]
            info[f"phase{i}/dev_en"] = sum(devs) / len(devs)
        encoder = _encoder_state(model)
        if prefix_cache is not None and dist.rank == 0:
            dev = info[f"phase{i}/dev_en"]
            meta = {
                "chain_prefix": ">".join(p.name for p in plan.phases[: i + 1]),
                "dev_en": dev if math.isfinite(dev) else None,
            }
            _cache_io(functools.partial(prefix_cache.put, keys[i], encoder, meta), None)
        del model

    target = plan.target.task
    key = f"dev/{target.name}/en/{target.metric}"
    model = _wrap(build_model(base_model, target, encoder, seed=plan.seed * 1000 + 999), dist)

    def on_eval(step: int, extra: dict[str, float]) -> None:
        if step == plan.target.steps:
            return  # the final evaluation below reports this point with every language
        metrics = {"target_step": float(step), **extra}
        if dist.rank == 0:
            metrics[key] = score(model, target, "dev", "en")[target.metric]
        dist.barrier()
        report(metrics)

    stats = _train_phase(
        model,
        plan.target,
        store=store,
        settings=settings,
        dist=dist,
        seed=plan.seed * 1000 + 999,
        pad_id=pad_id,
        on_eval=on_eval,
        eval_every=plan.eval_every,
    )
    final: dict[str, float] = {
        "target_step": float(plan.target.steps),
        **info,
        **{f"target/{k}": v for k, v in stats.items()},
    }
    if dist.rank == 0:
        if prefix_cache is not None:
            final.update(prefix_cache.stats.as_metrics())
        for split in ("dev", "test"):
            per_lang: dict[str, dict[str, float]] = {}
            for lang in plan.eval_languages:
                per_lang[lang] = score(model, target, split, lang)
                final.update(
                    {f"{split}/{target.name}/{lang}/{m}": v for m, v in per_lang[lang].items()}
                )
            for m in per_lang[plan.eval_languages[0]]:
                final[f"{split}/{target.name}/avg/{m}"] = sum(
                    d[m] for d in per_lang.values()
                ) / len(per_lang)
        if final_model_dir is not None:
            inner = (
                model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
            )
            inner.save_pretrained(str(final_model_dir))  # type: ignore[operator]
    dist.barrier()
    report(final)
    logging.getLogger(__name__).debug("chain %s done", plan.name)
    return final
