"""Throughput: raystilts' phase training and evaluation against Hugging Face's ``Trainer``.

    python benchmarks/throughput.py --smoke             # tiny models, seconds: CI
    python benchmarks/throughput.py                     # embedded + XLM-R-base-shaped, 3 repeats
    python benchmarks/throughput.py --models embedded --tasks mini_mnli --repeats 5
    python benchmarks/throughput.py --fp32 --no-pack    # raystilts without bf16 and packing
    python benchmarks/throughput.py --bf16-accuracy     # bf16 against fp32 on the embedded chains

Same weights (one ``build_model`` call per side, same seed), same tokenized rows, batch 32,
AdamW (fused on both sides), linear warmup over 10% of the steps, gradient clipping at 1.0,
SDPA attention on both (transformers' default for these families).
raystilts runs its own phase loop (``raystilts.train.runner._train_phase``) and ``evaluate``;
``Trainer`` gets the batches raystilts draws, in the same order and collated by the same
function (like for like: the same rows, padded), and, in another column, its own
``group_by_length`` sampler. Trainer.predict runs on the same evaluation rows with the same
batch size. Where raystilts packs a batch (per-token labels: raystilts.data.packing), it
computes the same rows without their padding; ``computed/real`` says how much it computes.

Precision: Trainer always runs in raystilts' precision in the ratio's column (``bf16=True``,
autocast through accelerate, when raystilts autocasts in bf16; fp32 otherwise), and in the
other precision in a reference column. ``--fp32`` runs both in fp32.

Timing rules, stated before measuring: steady state only (the first ``--warmup`` steps of each
run are excluded from both sides: they hold one-off allocation and Trainer's set-up), tokens
are the rows' real (non-pad) tokens, the sides alternate A/B within every repeat and each
figure is the median over repeats. The XLM-R-base-shaped body runs fewer steps
(``BASE_SIZE``; ``--base-full`` for ``--steps``). The loss check trains both in fp32 with
dropout off on the same batches: the mean losses must agree (the same computation), else the
script exits 1.

Last line: ``throughput: train=R1 eval=R2`` (median over models and tasks of the ratios
raystilts / Trainer with the same batches, and raystilts evaluate / Trainer.predict).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch import nn

from raystilts.data import Features, FeatureStore, batches, collate
from raystilts.tasks import CATALOG, TaskSpec
from raystilts.train.accel import bf16_active
from raystilts.train.models import build_model
from raystilts.train.runner import Dist, Phase, TrainSettings, _optimizer, _train_phase, evaluate

LR = 1e-4  # a fine-tuning rate for both sizes; throughput does not depend on it
EVAL_SPLIT = {"mini_mnli": ("dev", "en"), "mini_udpos": ("test", "en")}


@dataclass(frozen=True, slots=True)
class Setup:
    name: str
    model_dir: str
    store: FeatureStore
    pad_id: int


def runner_batches(feats: Features, *, batch_size: int, seed: int, steps: int) -> list[list[int]]:
    """The row indices of each step, in the order ``_train_phase`` draws them (one task, one
    rank, no accumulation): epochs of :func:`raystilts.data.batches`, popped from the end."""
    out: list[list[int]] = []
    epoch = 0
    while len(out) < steps:
        plan = batches(feats.lengths, batch_size=batch_size, seed=seed, epoch=epoch)
        out.extend(reversed(plan))
        epoch += 1
    return out[:steps]


def no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def steady(stamps: Sequence[float], tokens: Sequence[int], warmup: int) -> float:
    """Tokens per second after ``warmup`` steps: stamps[i] is the end of step i+1."""
    return sum(tokens[warmup:]) / (stamps[-1] - stamps[warmup - 1])


# ---------------------------------------------------------------- raystilts


def train_raystilts(
    s: Setup, task: TaskSpec, feats: Features, *, steps: int, settings: TrainSettings, dropout: bool
) -> tuple[list[float], float]:
    """(end time of every step, mean loss) of raystilts' own phase loop."""
    model = build_model(s.model_dir, task, None, seed=0, pad_id=s.pad_id)
    if not dropout:
        no_dropout(model)
    stamps: list[float] = []
    losses: list[float] = []

    def on_eval(step: int, m: dict[str, float]) -> None:  # once per step: a time stamp
        stamps.append(time.perf_counter())
        losses.append(m["train/loss"])

    _train_phase(
        model,
        Phase(task=task, lr=LR, steps=steps),
        store=s.store,
        settings=settings,
        dist=Dist(),
        seed=0,
        pad_id=s.pad_id,
        on_eval=on_eval,
        eval_every=1,
    )
    return stamps, losses[-1]


def eval_raystilts(s: Setup, task: TaskSpec, settings: TrainSettings) -> float:
    """Seconds of one ``evaluate`` call (metrics included) on the task's evaluation rows."""
    model = build_model(s.model_dir, task, None, seed=0, pad_id=s.pad_id)
    split, lang = EVAL_SPLIT[task.name]
    t0 = time.perf_counter()
    evaluate(
        model,
        task,
        s.store,
        split,
        lang,
        settings=settings,
        device=torch.device("cpu"),
        pad_id=s.pad_id,
    )
    return time.perf_counter() - t0


# ---------------------------------------------------------------- Trainer


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Row indices as a dataset; ``length`` lets Trainer's length grouping read them."""

    def __init__(self, feats: Features) -> None:
        self.lengths = feats.lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"idx": i, "length": self.lengths[i]}


def _row_table(feats: Features) -> Any:
    """Row indices with a ``length`` column: Trainer's length grouping reads that column only
    from a ``datasets.Dataset``."""
    import datasets

    return datasets.Dataset.from_dict({"idx": list(range(len(feats))), "length": feats.lengths})


def _collator(feats: Features, pad_id: int, seen: list[int]) -> Callable[[list[Any]], Any]:
    def collate_rows(rows: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        idx = [r["idx"] for r in rows]
        seen.append(sum(feats.length(i) for i in idx))
        return collate(feats, idx, pad_id=pad_id)

    return collate_rows


def _trainer(
    model: nn.Module, feats: Features, pad_id: int, out_dir: str, **kw: Any
) -> tuple[Any, list[float], list[int]]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    stamps: list[float] = []
    seen: list[int] = []
    fixed: list[list[int]] | None = kw.pop("fixed_batches", None)

    class Stamp(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            stamps.append(time.perf_counter())

    class SameBatches(Trainer):  # type: ignore[misc]
        def get_train_dataloader(self) -> Any:
            if fixed is None:
                return super().get_train_dataloader()
            return torch.utils.data.DataLoader(
                _Rows(feats), batch_sampler=fixed, collate_fn=_collator(feats, pad_id, seen)
            )

    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=256,
        learning_rate=LR,
        weight_decay=0.01,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        remove_unused_columns=False,
        length_column_name="length",
        **kw,
    )
    trainer = SameBatches(
        model=model,
        args=args,
        train_dataset=_row_table(feats),
        data_collator=_collator(feats, pad_id, seen),
        callbacks=[Stamp()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every run's summary dict
    return trainer, stamps, seen


def train_trainer(
    s: Setup,
    task: TaskSpec,
    feats: Features,
    *,
    steps: int,
    fixed: list[list[int]] | None,
    bf16: bool,
    dropout: bool,
    tmp: str,
) -> tuple[list[float], list[int], float]:
    """(end time of every step, real tokens of every step, mean loss) of ``Trainer.train``:
    on ``fixed`` batches, else with ``train_sampling_strategy="group_by_length"``."""
    model = build_model(s.model_dir, task, None, seed=0, pad_id=s.pad_id)
    if not dropout:
        no_dropout(model)
    strategy = "group_by_length" if fixed is None else "random"
    trainer, stamps, seen = _trainer(
        model,
        feats,
        s.pad_id,
        tmp,
        max_steps=steps,
        bf16=bf16,
        train_sampling_strategy=strategy,
        fixed_batches=fixed,
    )
    result = trainer.train()
    return stamps, seen[: len(stamps)], float(result.training_loss)


def eval_trainer(s: Setup, task: TaskSpec, bf16: bool, tmp: str) -> float:
    """Seconds of ``Trainer.predict`` on the same rows (logits only, no metric)."""
    split, lang = EVAL_SPLIT[task.name]
    feats = s.store.load(task, split, lang)
    model = build_model(s.model_dir, task, None, seed=0, pad_id=s.pad_id)
    trainer, _, _ = _trainer(model, feats, s.pad_id, tmp, bf16=bf16)
    t0 = time.perf_counter()
    trainer.predict(_Rows(feats))
    return time.perf_counter() - t0


# ---------------------------------------------------------------- models and data


def _needs(tasks: Sequence[TaskSpec]) -> set[tuple[TaskSpec, str, str]]:
    return {(t, split, lang) for t in tasks for lang in t.languages for split in t.splits(lang)}


def base_shaped(embedded_dir: Path, out: Path, *, smoke: bool) -> Path:
    """An XLM-R-base-shaped body (12 layers, 768 wide, 12 heads, 3072 FFN; smoke: 2 x 64)
    with the embedded model's vocabulary and tokenizer, random weights (speed does not depend
    on them)."""
    import shutil

    from transformers import AutoConfig, XLMRobertaConfig, XLMRobertaForMaskedLM

    small = AutoConfig.from_pretrained(str(embedded_dir))
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    if not smoke:
        shape = dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
        )
    config = XLMRobertaConfig(
        vocab_size=small.vocab_size,
        max_position_embeddings=small.max_position_embeddings,
        pad_token_id=small.pad_token_id,
        bos_token_id=small.bos_token_id,
        eos_token_id=small.eos_token_id,
        **shape,
    )
    torch.manual_seed(0)
    XLMRobertaForMaskedLM(config).save_pretrained(str(out))
    for f in embedded_dir.iterdir():  # the tokenizer files, not the small model's own
        if f.is_file() and f.suffix not in (".safetensors", ".bin") and f.name != "config.json":
            shutil.copy(f, out / f.name)
    return out


def setups(
    names: Sequence[str], tasks: Sequence[TaskSpec], tmp: Path, *, smoke: bool, pretrained: bool
) -> list[Setup]:
    """The embedded model and the base-shaped body over its data and tokenizer.

    ``pretrained``: the embedded benchmark's cached model (pretrained once, minutes), what
    accuracy checks need; otherwise its exact shape and tokenizer after a few MLM steps (speed
    does not depend on the weights). ``smoke``: a 2-layer, 32-wide model instead."""
    from raystilts.tasks.embedded import generate
    from raystilts.train.pretrain import PretrainSettings, ensure_base_model
    from raystilts.train.workspace import default_cache_dir, prepare_workspace

    if pretrained:
        ws = prepare_workspace(
            model="embedded", needs=_needs(tasks), max_length=64, cache_dir=default_cache_dir()
        )
        model_dir, store, pad_id = Path(ws.model), ws.features, ws.pad_id
    else:
        brief = PretrainSettings(steps=5, batch_size=8, sentences_per_language=200)
        if smoke:
            brief = PretrainSettings(
                steps=5, batch_size=8, hidden_size=32, num_layers=2, num_heads=2,
                intermediate_size=64, sentences_per_language=200,
            )  # fmt: skip
        model_dir = ensure_base_model(tmp / "model", brief, log=False)
        store = FeatureStore(cache_dir=tmp / "features", tokenizer_dir=model_dir, max_length=64)
        data = generate(tmp / "data", seed=0)
        for task, split, lang in _needs(tasks):
            store.ensure(task, split, lang, data_dir=data)
        from transformers import AutoTokenizer

        pad_id = int(AutoTokenizer.from_pretrained(str(model_dir)).pad_token_id)
    out = []
    for name in names:
        path = model_dir if name == "embedded" else base_shaped(model_dir, tmp / name, smoke=smoke)
        out.append(Setup(name, str(path), store, pad_id))
    return out


# ---------------------------------------------------------------- measurements


@dataclass(slots=True)
class Row:
    model: str
    task: str
    bf16: bool  # the precision of raystilts' run, and of Trainer's in the same column
    raystilts: list[float]  # train tokens/s per repeat
    trainer: list[float]  # same batches, same precision
    trainer_other: list[float]  # same batches, the other precision
    trainer_grouped: list[float]  # Trainer's own group_by_length sampler, same precision
    eval_raystilts: list[float]  # examples/s
    eval_trainer: list[float]  # Trainer.predict, same precision
    padded: float  # padded / real tokens of the batches as padded (what Trainer computes)
    computed: float  # computed slots / real tokens of raystilts' batches (packed where it packs)


def computed_slots(s: Setup, task: TaskSpec, feats: Features, fixed: list[list[int]]) -> int:
    """Token slots raystilts computes for ``fixed``: packed rows where the runner packs them."""
    from raystilts.data.packing import pack, packable
    from raystilts.train.runner import _packed_positions

    model = build_model(s.model_dir, task, None, seed=0, pad_id=s.pad_id)
    start = _packed_positions(model, s.pad_id)
    total = 0
    for idx in fixed:
        batch = collate(feats, idx, pad_id=s.pad_id)
        if start is not None and packable(batch):
            limit = s.store.model_limit or s.store.max_length
            batch = pack(batch, position_start=start, limit=limit, pad_id=s.pad_id)
        total += batch["input_ids"].numel()
    return total


def measure(s: Setup, task: TaskSpec, args: argparse.Namespace, tmp: str) -> Row:
    """A/B interleaved: every repeat runs each side once, in an order rotated per repeat."""
    feats = s.store.load_train(task)
    fixed = runner_batches(feats, batch_size=32, seed=0, steps=args.steps)
    tokens = [sum(feats.length(i) for i in b) for b in fixed]
    padded = sum(len(b) * max(feats.length(i) for i in b) for b in fixed) / sum(tokens)
    computed = computed_slots(s, task, feats, fixed) / sum(tokens) if not args.no_pack else padded
    split, lang = EVAL_SPLIT[task.name]
    n_eval = len(s.store.load(task, split, lang))
    settings = raystilts_settings(args)
    bf16 = bf16_active(torch.device("cpu"), settings.bf16, cpu=settings.bf16_cpu)
    row = Row(s.name, task.name, bf16, [], [], [], [], [], [], padded, computed)
    kw: dict[str, Any] = {"steps": args.steps, "dropout": True}

    def ours() -> None:
        stamps, _ = train_raystilts(s, task, feats, settings=settings, **kw)
        row.raystilts.append(steady(stamps, tokens, args.warmup))
        row.eval_raystilts.append(n_eval / eval_raystilts(s, task, settings))

    def theirs(same: bool) -> Callable[[], None]:
        precision = bf16 if same else not bf16

        def run() -> None:
            stamps, seen, _ = train_trainer(
                s, task, feats, fixed=fixed, bf16=precision, tmp=tmp, **kw
            )
            if seen != tokens:
                raise RuntimeError("Trainer did not train on raystilts' batches")
            (row.trainer if same else row.trainer_other).append(steady(stamps, tokens, args.warmup))
            if same:
                row.eval_trainer.append(n_eval / eval_trainer(s, task, precision, tmp))

        return run

    def grouped() -> None:
        stamps, seen, _ = train_trainer(s, task, feats, fixed=None, bf16=bf16, tmp=tmp, **kw)
        row.trainer_grouped.append(steady(stamps, seen, args.warmup))

    runs = [ours, theirs(True), theirs(False), grouped]
    for rep in range(args.repeats):
        for run in runs[rep % len(runs) :] + runs[: rep % len(runs)]:
            run()
    return row


def raystilts_settings(args: argparse.Namespace) -> TrainSettings:
    """raystilts' defaults, but for what the flags turn off or on."""
    kw: dict[str, Any] = {"batch_size": 32, "pack": not args.no_pack}
    if args.fp32:
        kw["bf16"] = False
    if args.bf16_cpu:
        kw["bf16_cpu"] = True
    return TrainSettings(**kw)


def loss_check(
    s: Setup, task: TaskSpec, steps: int, tmp: str, settings: TrainSettings
) -> tuple[float, float]:
    """(raystilts, Trainer) mean training loss, fp32, dropout off, the same batches (packed
    where raystilts packs them, padded for Trainer): the same computation."""
    feats = s.store.load_train(task)
    fixed = runner_batches(feats, batch_size=32, seed=0, steps=steps)
    settings = dataclasses.replace(settings, bf16=False)
    _, ours = train_raystilts(s, task, feats, steps=steps, settings=settings, dropout=False)
    _, _, theirs = train_trainer(
        s, task, feats, steps=steps, fixed=fixed, bf16=False, dropout=False, tmp=tmp
    )
    return ours, theirs


def profile(
    s: Setup, task: TaskSpec, steps: int, warmup: int, settings: TrainSettings
) -> dict[str, float]:
    """Share of a raystilts step per part, the runner's own helpers and settings, timed after
    ``warmup`` steps (CPU: every call is synchronous, so wall time per part is its cost);
    "batch" is collation, packing and the copy to the device."""
    from transformers import get_linear_schedule_with_warmup

    from raystilts.train.accel import autocast
    from raystilts.train.runner import _packed_positions, _PhaseRows

    dist = Dist()
    model = build_model(s.model_dir, task, None, seed=0, pad_id=s.pad_id).train()
    rows = _PhaseRows.load(Phase(task=task, lr=LR, steps=steps), store=s.store, dist=dist, seed=0)
    if settings.pack:
        rows.positions = _packed_positions(model, s.pad_id)
        rows.limit = s.store.model_limit or s.store.max_length
    opt = _optimizer(model, lr=LR, weight_decay=settings.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, 1, steps)
    parts = dict.fromkeys(("batch", "forward", "backward", "optimizer"), 0.0)
    for step in range(steps):
        t = [time.perf_counter()]
        batch, _ = rows.next_batch(task.name, settings=settings, dist=dist, pad_id=s.pad_id)
        t.append(time.perf_counter())
        with autocast(dist.device, settings.bf16, cpu=settings.bf16_cpu):
            loss = model(**batch).loss
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        if step >= warmup:
            for j, name in enumerate(parts):
                parts[name] += t[j + 1] - t[j]
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()} | {
        "ms_per_step": 1000 * total / (steps - warmup)
    }


def bf16_accuracy(s: Setup, seeds: Sequence[int]) -> None:
    """The embedded benchmark's chains (mini_xnli after nothing and after mini_mnli, mini_udpos
    alone; the demo's settings: 300 intermediate and 100 target steps), fp32 against bf16
    autocast: English dev and the zero-shot test average, mean ± sd over seeds."""
    from raystilts.train.runner import ChainPlan, run_chain

    chains = [("mini_xnli", ()), ("mini_xnli", ("mini_mnli",)), ("mini_udpos", ())]
    for target_name, inter in chains:
        target = CATALOG[target_name]
        for bf16 in (False, True):
            dev, test = [], []
            for seed in seeds:
                plan = ChainPlan(
                    phases=tuple(Phase(task=CATALOG[t], lr=1e-3, steps=300) for t in inter),
                    target=Phase(task=target, lr=1e-3, steps=100),
                    eval_every=100,
                    eval_languages=target.languages,
                    seed=seed,
                )
                m = run_chain(
                    plan,
                    base_model=s.model_dir,
                    store=s.store,
                    settings=TrainSettings(batch_size=32, bf16=bf16, bf16_cpu=bf16),
                    report=lambda _: None,
                    pad_id=s.pad_id,
                )
                dev.append(m[f"dev/{target_name}/en/{target.metric}"])
                test.append(m[f"test/{target_name}/avg/{target.metric}"])
            sd = statistics.pstdev
            print(
                f"  {plan.name:22s} {'bf16' if bf16 else 'fp32'}: dev_en "
                f"{statistics.mean(dev):.3f}±{sd(dev):.3f} test_avg "
                f"{statistics.mean(test):.3f}±{sd(test):.3f}",
                flush=True,
            )


def report(rows: Sequence[Row], losses: dict[str, tuple[float, float]]) -> tuple[float, float]:
    med = statistics.median
    print(
        "\nmodel     task        prec | train tok/s: raystilts  Trainer  ratio | Trainer other "
        "precision ratio | Trainer-grouped ratio | eval ex/s: raystilts  predict  ratio "
        "| padded/real computed/real"
    )
    train, evals = [], []
    for r in rows:
        ratio = med(r.raystilts) / med(r.trainer)
        eval_ratio = med(r.eval_raystilts) / med(r.eval_trainer)
        train.append(ratio)
        evals.append(eval_ratio)
        print(
            f"{r.model:9s} {r.task:11s} {'bf16' if r.bf16 else 'fp32'} | "
            f"{med(r.raystilts):12.0f} {med(r.trainer):8.0f} {ratio:6.2f} | "
            f"{med(r.raystilts) / med(r.trainer_other):29.2f} | "
            f"{med(r.raystilts) / med(r.trainer_grouped):21.2f} | {med(r.eval_raystilts):15.0f} "
            f"{med(r.eval_trainer):8.0f} {eval_ratio:6.2f} | {r.padded:11.3f} {r.computed:13.3f}"
        )
    for key, (ours, theirs) in losses.items():
        print(
            f"loss check {key}: raystilts {ours:.6f} Trainer {theirs:.6f} |diff| {abs(ours - theirs):.2e}"
        )
    return med(train), med(evals)


# the XLM-R-base-shaped body takes seconds a step on two cores: fewer steps and a shorter loss
# check keep its rows to minutes, and 4 timed steps a run still give medians that repeat
BASE_SIZE = {"steps": 6, "warmup": 2, "loss_steps": 4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny models, 1 repeat: seconds")
    ap.add_argument(
        "--models", nargs="+", default=["embedded", "base"], choices=["embedded", "base"]
    )
    ap.add_argument("--tasks", nargs="+", default=list(EVAL_SPLIT), choices=list(EVAL_SPLIT))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12, help="training steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    ap.add_argument("--loss-steps", type=int, default=10)
    ap.add_argument(
        "--base-full", action="store_true", help=f"the base model at --steps too, not {BASE_SIZE}"
    )
    ap.add_argument(
        "--bf16-accuracy", action="store_true", help="only the bf16/fp32 accuracy check"
    )
    ap.add_argument("--bf16-cpu", action="store_true", help="raystilts with bf16 on this CPU")
    ap.add_argument("--fp32", action="store_true", help="raystilts (and its Trainer) in fp32")
    ap.add_argument("--no-pack", action="store_true", help="raystilts' batches padded")
    ap.add_argument("--pretrained", action="store_true", help="the cached embedded model")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.steps, args.warmup, args.loss_steps = 1, 4, 1, 3
        args.tasks = ["mini_udpos"]  # the smaller training set; both models still run
    if not 1 <= args.warmup < args.steps:
        sys.exit(f"--warmup {args.warmup}: must be at least 1 and below --steps {args.steps}")
    tasks = [CATALOG[t] for t in args.tasks]
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()  # feature caching and model saving: noise, not results
    hf_logging.disable_progress_bar()
    torch.set_num_threads(torch.get_num_threads())  # both sides share one thread pool
    with tempfile.TemporaryDirectory(prefix="raystilts-throughput-") as tmp:
        if args.bf16_accuracy:
            needs = [CATALOG[t] for t in ("mini_mnli", "mini_xnli", "mini_udpos")]
            ws = setups(["embedded"], needs, Path(tmp), smoke=args.smoke, pretrained=True)
            bf16_accuracy(ws[0], args.seeds)
            return
        rows, losses = [], {}
        settings = raystilts_settings(args)
        bf16 = bf16_active(torch.device("cpu"), settings.bf16, cpu=settings.bf16_cpu)
        print(
            f"threads {torch.get_num_threads()}, raystilts bf16 autocast: {bf16}, "
            f"packing: {settings.pack}",
            flush=True,
        )
        for s in setups(
            args.models, tasks, Path(tmp), smoke=args.smoke, pretrained=args.pretrained
        ):
            size = argparse.Namespace(**vars(args))
            if s.name == "base" and not (args.smoke or args.base_full):
                vars(size).update(BASE_SIZE)
            for task in tasks:
                t0 = time.perf_counter()
                ours, theirs = loss_check(s, task, size.loss_steps, tmp, settings)
                losses[f"{s.name}/{task.name}"] = (ours, theirs)
                print(f"{s.name}/{task.name} loss check: {ours:.6f} {theirs:.6f}", flush=True)
                rows.append(measure(s, task, size, tmp))
                print(f"{s.name}/{task.name} per repeat: {rows[-1]}", flush=True)
                split = profile(s, task, size.steps, size.warmup, settings)
                print(
                    f"{s.name}/{task.name} profile: "
                    + " ".join(f"{k} {v:.3f}" for k, v in split.items())
                    + f" ({time.perf_counter() - t0:.0f} s for this row)",
                    flush=True,
                )
        train, evals = report(rows, losses)
    bad = [k for k, (a, b) in losses.items() if not abs(a - b) <= 1e-4 * max(1.0, abs(b))]
    if bad or not all(math.isfinite(x) for x in (train, evals)):
        print(f"loss check failed: {', '.join(bad)}", flush=True)
        sys.exit(1)
    print(f"throughput: train={train:.2f} eval={evals:.2f}")


if __name__ == "__main__":
    main()
