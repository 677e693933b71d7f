"""GPU check: tokens/s, model FLOPs utilisation and peak memory of the real chain runner on an
XLM-R-large-shaped model, against Hugging Face's ``Trainer`` on the same model and rows.

    python benchmarks/gpu_check.py                      # large shape, lengths 128 and 384, bf16
    python benchmarks/gpu_check.py --gpus 1 8           # also 8-GPU DDP (NCCL) where present
    python benchmarks/gpu_check.py --compile            # torch.compile in both (compile timed)
    python benchmarks/gpu_check.py --smoke              # tiny config on whatever device: CI

The model is built from ``XLMRobertaConfig`` (24 layers, 1024 wide, 16 heads, 4096 FFN, the real
250,002-token vocabulary) with random weights: speed does not depend on them. Rows are random
token ids of exactly the sequence length (what SQuAD windows and packed rows look like: no
padding), labels of a 3-class sequence classification (the MNLI head). raystilts trains through
``raystilts.train.runner._train_phase`` (its own loop, optimizer and autocast), one process per GPU
with DDP as under Ray Train; Trainer on one GPU.

Model FLOPs per trained token: ``6 * N + 12 * layers * hidden * length`` (N: parameters
outside the embeddings; the second term is attention's score and value products, PaLM's
appendix B), against the device's dense bf16 peak (H100/H200 SXM: 989 TFLOPS, A100: 312;
``--peak-tflops`` for others). The first ``--warmup`` steps are left out of the timing.
Last line: ``gpu_check: mfu128=M1 mfu384=M2`` (raystilts, one GPU; ``nan`` without a peak).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch import nn

from raystilts.data import Features, FeatureStore
from raystilts.tasks import CATALOG
from raystilts.train.runner import Dist, Phase, TrainSettings, _train_phase, _wrap

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0}
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
TASK = CATALOG["mnli"]  # sequence classification, 3 labels


class SyntheticStore(FeatureStore):
    """A feature store whose training rows are random token ids of one length (no tokenizer:
    the runner reads only features here)."""

    def __init__(self, model_dir: Path, *, rows: int, length: int, vocab: int) -> None:
        super().__init__(
            cache_dir=model_dir / "features", tokenizer_dir=model_dir, max_length=length
        )
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(5, vocab, (rows, length), generator=gen)
        ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
        labels = torch.randint(0, TASK.num_labels, (rows,), generator=gen)
        self.rows = Features(input_ids=ids.tolist(), labels=labels.tolist(), kind=TASK.kind)

    def load_train(self, task: Any) -> Features:
        return self.rows


@dataclass(frozen=True, slots=True)
class Result:
    tokens_per_s_per_gpu: float
    mfu: float
    peak_mem_gib: float
    seconds: float  # the whole run, compilation included


def build_dir(out: Path, shape: dict[str, int], vocab: int) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(vocab_size=vocab, max_position_embeddings=514, num_labels=3, **shape)
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).save_pretrained(str(out))
    return out


def flops_per_token(model: nn.Module, length: int) -> float:
    cfg: Any = model.config
    embed = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    n = sum(p.numel() for p in model.parameters()) - embed
    return 6.0 * n + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * length


def peak_tflops(device: torch.device, given: float | None) -> float:
    if given:
        return given
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), math.nan)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_raystilts(
    rank: int, world: int, args: argparse.Namespace, model_dir: Path, length: int
) -> Result:
    """One rank of the real runner's phase loop; under ``world > 1`` a DDP group (NCCL)."""
    from raystilts.train.models import build_model

    if world > 1:
        torch.distributed.init_process_group("nccl", rank=rank, world_size=world)
    dist = Dist.current()
    if dist.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist.device)
    store = SyntheticStore(
        model_dir, rows=args.batch_size * world * args.steps, length=length, vocab=args.vocab
    )
    model = build_model(str(model_dir), TASK, None, seed=0, pad_id=1)
    per_token = flops_per_token(model, length)
    model = _wrap(model, dist)
    stamps: list[float] = []

    def on_eval(step: int, metrics: dict[str, float]) -> None:  # reading the loss syncs the device
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    _train_phase(
        model,
        Phase(task=TASK, lr=1e-5, steps=args.steps),
        store=store,
        settings=TrainSettings(batch_size=args.batch_size, compile=args.compile),
        dist=dist,
        seed=0,
        pad_id=1,
        on_eval=on_eval,
        eval_every=args.warmup,
    )
    seconds = time.perf_counter() - t0
    tokens = (args.steps - args.warmup) * args.batch_size * length
    rate = tokens / (stamps[-1] - stamps[0])
    peak = peak_tflops(dist.device, args.peak_tflops)
    result = Result(rate, rate * per_token / (peak * 1e12), peak_memory_gib(dist.device), seconds)
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def _rank_main(
    rank: int, world: int, args: argparse.Namespace, model_dir: Path, length: int, out: str
) -> None:
    result = run_raystilts(rank, world, args, model_dir, length)
    if rank == 0:
        Path(out).write_text(repr(dataclasses.astuple(result)))


def run_ddp(world: int, args: argparse.Namespace, model_dir: Path, length: int) -> Result:
    """``world`` processes, one per GPU, as Ray Train's TorchTrainer workers are."""
    import ast

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29511")
    out = str(model_dir.parent / f"ddp-{world}-{length}.txt")
    torch.multiprocessing.spawn(
        _rank_main, args=(world, args, model_dir, length, out), nprocs=world
    )
    return Result(*ast.literal_eval(Path(out).read_text()))


def _trainer_main(
    rank: int, args: argparse.Namespace, model_dir: Path, length: int, out: str
) -> None:
    # Trainer spreads one process over every visible GPU (DataParallel): show it one
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    result = run_trainer(args, model_dir, length, torch.device("cuda", 0))
    Path(out).write_text(repr(dataclasses.astuple(result)))


def run_alone(fn: Any, args: argparse.Namespace, model_dir: Path, length: int) -> Result:
    """``fn`` in a fresh process (CUDA not yet initialised there), its Result read back."""
    import ast

    out = str(model_dir.parent / f"alone-{length}.txt")
    torch.multiprocessing.spawn(fn, args=(args, model_dir, length, out), nprocs=1)
    return Result(*ast.literal_eval(Path(out).read_text()))


def run_trainer(
    args: argparse.Namespace, model_dir: Path, length: int, device: torch.device
) -> Result:
    """``Trainer.train`` on one device: the same model, rows, batch, optimizer and precision."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from raystilts.data import collate
    from raystilts.train.accel import bf16_active
    from raystilts.train.models import build_model

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = SyntheticStore(
        model_dir, rows=args.batch_size * args.steps, length=length, vocab=args.vocab
    ).rows
    model = build_model(str(model_dir), TASK, None, seed=0, pad_id=1)
    per_token = flops_per_token(model, length)
    stamps: list[float] = []

    class Stamp(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, a: Any, state: Any, control: Any, **_: Any) -> None:
            if state.global_step in (args.warmup, args.steps):
                _sync(device)  # Trainer does not wait for the device; the timing must
                stamps.append(time.perf_counter())

    targs = TrainingArguments(
        output_dir=str(model_dir.parent / "trainer"),
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-5,
        weight_decay=0.01,
        warmup_steps=0.1,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        bf16=bf16_active(device, True),
        torch_compile=args.compile,
        max_steps=args.steps,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=[{"idx": i} for i in range(len(rows))],
        data_collator=lambda batch: collate(rows, [r["idx"] for r in batch], pad_id=1),
        callbacks=[Stamp()],
    )
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    rate = (args.steps - args.warmup) * args.batch_size * length / (stamps[-1] - stamps[0])
    peak = peak_tflops(device, args.peak_tflops)
    return Result(rate, rate * per_token / (peak * 1e12), peak_memory_gib(device), seconds)


def check(args: argparse.Namespace) -> dict[str, Result]:
    """Every (side, GPU count, length) measured: keys like ``raystilts/1/128``."""
    gpus = torch.cuda.device_count()
    device = torch.device("cuda", 0) if gpus else torch.device("cpu")
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="raystilts-gpu-check-") as tmp:
        shape = TINY if args.smoke else LARGE
        model_dir = build_dir(Path(tmp) / "model", shape, args.vocab)
        for length in args.lengths:
            for n in sorted({g for g in args.gpus if 1 <= g <= max(gpus, 1)}):  # 0: no GPU here
                if n == 1:
                    results[f"raystilts/1/{length}"] = run_raystilts(0, 1, args, model_dir, length)
                else:
                    results[f"raystilts/{n}/{length}"] = run_ddp(n, args, model_dir, length)
                _print(f"raystilts/{n}/{length}", results[f"raystilts/{n}/{length}"])
            if not args.no_trainer:
                results[f"trainer/1/{length}"] = (
                    run_trainer(args, model_dir, length, device)
                    if gpus <= 1
                    else run_alone(_trainer_main, args, model_dir, length)
                )
                _print(f"trainer/1/{length}", results[f"trainer/1/{length}"])
    return results


def _print(key: str, r: Result) -> None:
    side, n, length = key.split("/")
    print(
        f"{side:9s} gpus {n} length {length}: {r.tokens_per_s_per_gpu:10.0f} tokens/s per GPU, "
        f"MFU {r.mfu:.3f}, peak memory {r.peak_mem_gib:.2f} GiB, run {r.seconds:.1f} s",
        flush=True,
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny config, few steps, any device")
    ap.add_argument("--lengths", nargs="+", type=int, default=[128, 384])
    ap.add_argument("--gpus", nargs="+", type=int, default=[1, torch.cuda.device_count()])
    ap.add_argument("--batch-size", type=int, default=32, help="rows per GPU per step")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    ap.add_argument("--vocab", type=int, default=250_002, help="XLM-R's vocabulary size")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per device")
    ap.add_argument("--compile", action="store_true", help="torch.compile both sides")
    ap.add_argument("--no-trainer", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch_size, args.steps, args.warmup, args.vocab = 4, 4, 2, 1000
    if args.warmup < 1 or args.steps % args.warmup or args.steps <= args.warmup:
        ap.error(f"--steps {args.steps} must be a multiple of --warmup {args.warmup}, above it")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    results = check(args)
    mfu = {
        n: results[f"raystilts/1/{n}"].mfu for n in args.lengths if f"raystilts/1/{n}" in results
    }
    print("gpu_check: " + " ".join(f"mfu{n}={v:.3f}" for n, v in mfu.items()))


if __name__ == "__main__":
    main()
