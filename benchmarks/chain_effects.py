"""Do intermediate tasks matter on the embedded benchmark? Every chain x 3 seeds, no Ray.

    python benchmarks/chain_effects.py                 # default chains, seeds 0 1 2
    python benchmarks/chain_effects.py --seeds 0 1 2 --chains mini_mnli mini_topic,mini_mnli
    python benchmarks/chain_effects.py --smoke         # CI: two chains, one seed, a few steps

Prints, per target and chain, the mean and standard deviation over seeds of the English dev
score and the test score averaged over languages (zero-shot), and the gain over the baseline in
units of the baseline's seed standard deviation. Last line:
``chain_effects: helps=H hurts_or_flat=F noise_sd=S`` (chains beating the baseline by more than
two seed-sds, chains that do not, and the mean seed sd of the average test score).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raystilts.tasks import CATALOG
from raystilts.tasks.embedded import generate
from raystilts.train.pretrain import SMOKE_PRETRAIN, ensure_base_model
from raystilts.train.runner import ChainPlan, Phase, TrainSettings, run_chain
from raystilts.train.workspace import default_cache_dir, prepare_workspace

DEFAULT_CHAINS = [
    "",
    "mini_mnli",
    "mini_qqp",
    "mini_ccg",
    "mini_topic",
    "mini_topic,mini_mnli",
    "mini_mnli,mini_topic",
]

# CI's size: the whole path (workspace, baseline and one chain, report) in seconds once the
# embedded model is cached; the numbers mean nothing at this size.
SMOKE = {
    "targets": ["mini_xnli"],
    "chains": ["", "mini_mnli"],
    "seeds": [0],
    "phase_steps": 3,
    "target_steps": 3,
    "tiny_model": True,
}
SMOKE_CACHE = Path(tempfile.gettempdir()) / "raystilts-bench" / "smoke-cache"
TINY = SMOKE_PRETRAIN  # 5 steps: a smoke run must not spend minutes pretraining


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", nargs="+", default=["mini_xnli", "mini_udpos"])
    ap.add_argument(
        "--chains", nargs="+", default=DEFAULT_CHAINS, help="comma-separated tasks; '' = baseline"
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--phase-steps", type=int, default=200)
    ap.add_argument("--phase-lr", type=float, default=1e-3)
    ap.add_argument("--target-steps", type=int, default=200)
    ap.add_argument("--target-lr", type=float, default=1e-3)
    ap.add_argument(
        "--tiny-model",
        action="store_true",
        help=f"a 5-step tiny encoder and the embedded data in {SMOKE_CACHE}, not the base model",
    )
    ap.add_argument("--smoke", action="store_true", help=f"CI's tiny size: {SMOKE}")
    if ap.parse_known_args()[0].smoke:  # explicit flags still win over the smoke sizes
        ap.set_defaults(**SMOKE)
    args = ap.parse_args()

    needs = set()
    for name in {t for c in args.chains for t in c.split(",") if t} | set(args.targets):
        task = CATALOG[name]
        for lang in task.languages:
            needs.update((task, split, lang) for split in task.splits(lang))
    if args.tiny_model:
        ws = prepare_workspace(
            model=str(ensure_base_model(SMOKE_CACHE, TINY, log=False)),
            needs=needs,
            max_length=64,
            cache_dir=SMOKE_CACHE,
            data_dir=generate(SMOKE_CACHE / "embedded-data", seed=0),
        )
    else:
        ws = prepare_workspace(
            model="embedded", needs=needs, max_length=64, cache_dir=default_cache_dir()
        )
    settings = TrainSettings(batch_size=32)
    helps = flat = 0
    sds = []
    for target_name in args.targets:
        target = CATALOG[target_name]
        rows = {}
        for chain in args.chains:
            tasks = [t for t in chain.split(",") if t]
            devs, tests = [], []
            for seed in args.seeds:
                t0 = time.perf_counter()
                plan = ChainPlan(
                    phases=tuple(
                        Phase(task=CATALOG[t], lr=args.phase_lr, steps=args.phase_steps)
                        for t in tasks
                    ),
                    target=Phase(task=target, lr=args.target_lr, steps=args.target_steps),
                    eval_every=args.target_steps,
                    eval_languages=target.languages,
                    seed=seed,
                )
                m = run_chain(
                    plan,
                    base_model=ws.model,
                    store=ws.features,
                    settings=settings,
                    report=lambda _: None,
                    pad_id=ws.pad_id,
                )
                devs.append(m[f"dev/{target_name}/en/{target.metric}"])
                tests.append(m[f"test/{target_name}/avg/{target.metric}"])
                langs = " ".join(
                    f"{lang}={m[f'test/{target_name}/{lang}/{target.metric}']:.3f}"
                    for lang in target.languages
                )
                inter = " ".join(f"{t}={m[f'phase{i}/dev_en']:.2f}" for i, t in enumerate(tasks))
                print(
                    f"  {plan.name:40s} seed {seed}: [{inter}] dev_en {devs[-1]:.3f} test_avg {tests[-1]:.3f} [{langs}] ({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
            rows[chain] = (devs, tests)
        _base_dev, base_test = rows.get("", rows[args.chains[0]])
        sd = statistics.pstdev(base_test) or 1e-9
        sds.append(statistics.pstdev(base_test))
        print(
            f"\n{target_name}: baseline test avg {statistics.mean(base_test):.3f} ± {statistics.pstdev(base_test):.3f}"
        )
        for chain, (devs, tests) in rows.items():
            gain = statistics.mean(tests) - statistics.mean(base_test)
            noise = max(statistics.pstdev(tests), sd)
            if chain:
                helps += gain > 2 * noise
                flat += gain <= 2 * noise
            print(
                f"  {chain or '(baseline)':28s} dev_en {statistics.mean(devs):.3f}±{statistics.pstdev(devs):.3f}  test_avg {statistics.mean(tests):.3f}±{statistics.pstdev(tests):.3f}  gain {gain:+.3f} ({gain / noise:+.1f} sd)"
            )
    print(f"chain_effects: helps={helps} hurts_or_flat={flat} noise_sd={statistics.mean(sds):.4f}")


if __name__ == "__main__":
    main()
