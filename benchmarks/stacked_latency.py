#!/usr/bin/env python
"""What does one-pass inference with two gated adapters (two attributes) cost next to one?

Usage::

    .venv/bin/python benchmarks/stacked_latency.py            # 300 timed rounds
    .venv/bin/python benchmarks/stacked_latency.py --quick    # smoke test

The progressive correction of issue 14 keeps one named peft LoRA adapter per attribute,
each switched on per row by its own detector, applied in one pass
(``fairfix.correct.stacking.stacked_forward``).  Model: the Adult MLP of
``benchmarks/gating_latency.py``; detectors for sex (minority Female) and race
(minority Black), fitted on 8,000 Adult training rows, 3 epochs; two adapters (rank 8,
alpha 16) on the model's default targets with seeded random B matrices (latency does
not depend on the values); a batch of 1,024 Adult test rows, encoded once.

Measured in one process on one torch thread, interleaved round by round (rotating
order), after ``--warmup`` rounds: the base forward; the single-adapter gated pass
(``gating.gated_forward``, what a one-attribute bundle runs); the stacked pass with one
stage and with two.  Figures: medians, and the paired ratio (median over rounds of a
method's time over the base's in the same round).  Before timing, the script checks
that rows neither detector flags get the base's logits bit for bit.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gating_latency import ROOT, ensure_model, timeit  # noqa: E402  (the same model and timer)


def build(base: Any, seed: int) -> tuple[Any, list[Any], Any]:
    """(model with two named adapters, [sex detector, race detector], the single-adapter copy)."""
    from peft import LoraConfig, get_peft_model

    from fairfix.correct.gating import ADAPTER
    from fairfix.datasets import load_adult
    from fairfix.detect.fit import DetectorConfig, fit_detector

    train = load_adult("train").sample(8000, random_state=seed).reset_index(drop=True)
    detectors = [fit_detector(train, base, group=g, minority=[m], config=DetectorConfig(epochs=3, seed=seed))
                 for g, m in (("sex", "Female"), ("race", "Black"))]

    def adapted(names: list[str]) -> Any:
        work = copy.deepcopy(base)
        lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights=True,
                          target_modules=base.default_lora_targets)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            peft_model = get_peft_model(work.module, lcfg, adapter_name=names[0])
            for name in names[1:]:
                peft_model.add_adapter(name, lcfg)
        work.module = peft_model.base_model.model.eval()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in work.module.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        return work

    return adapted(["sex", "race"]), detectors, adapted([ADAPTER])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (smoke test)")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.warmup = 20, 3
    torch.set_num_threads(1)
    args.data_dir.mkdir(parents=True, exist_ok=True)

    from fairfix.correct.gating import gated_forward, lora_layers
    from fairfix.correct.stacking import Stage, stacked_forward
    from fairfix.datasets import load_adult

    base = ensure_model(args.data_dir, args.quick)
    two, (d_sex, d_race), one = build(base, args.seed)
    frame = load_adult("test").sample(args.batch, random_state=args.seed).reset_index(drop=True)
    inputs = base.encode(frame)
    layers_two, layers_one = lora_layers(two.module), lora_layers(one.module)
    stages = [Stage("sex", d_sex.layer, "detector", d_sex.module, args.tau),
              Stage("race", d_race.layer, "detector", d_race.module, args.tau)]

    with torch.no_grad():
        ref = base.forward(inputs)
        logits, _, flags = stacked_forward(two, inputs, stages, layers_two)
    neither = ~(flags[0] | flags[1])
    if not torch.equal(logits[torch.from_numpy(neither)], ref[torch.from_numpy(neither)]):
        raise SystemExit("rows flagged by neither detector differ from the base model")
    fns = {
        "base": lambda: base.forward(inputs),
        "one adapter, gated (gating.gated_forward)": lambda: gated_forward(
            one, inputs, tap_layer=d_sex.layer, mode="detector", detector=d_sex.module, tau=args.tau,
            layers=layers_one),
        "stacked, one stage (sex)": lambda: stacked_forward(two, inputs, stages[:1], layers_two),
        "stacked, two stages (sex, race)": lambda: stacked_forward(two, inputs, stages, layers_two),
    }
    times = timeit(fns, args.runs, args.warmup)
    med = {n: statistics.median(v) for n, v in times.items()}
    paired = {n: statistics.median(t / b for t, b in zip(v, times["base"], strict=True)) for n, v in times.items()}
    print(f"stacked gated inference (Adult MLP {base.pre.width}-128-64-2, batch {args.batch}, 1 thread, "
          f"median of {args.runs} interleaved rounds)")
    print(f"flagged: sex {flags[0].mean():.1%}, race {flags[1].mean():.1%}, both {(flags[0] & flags[1]).mean():.1%}, "
          f"neither {neither.mean():.1%} (bit-identical to the base: checked)")
    w = max(map(len, fns))
    print(f"{'method':<{w}}  median us  x base (median)  x base (paired)")
    for n in fns:
        print(f"{n:<{w}}  {med[n]:9.0f}  {med[n] / med['base']:15.2f}  {paired[n]:15.2f}")
    if args.json:
        args.json.write_text(json.dumps({"median_us": med, "paired": paired,
                                         "flag_shares": [float(f.mean()) for f in flags]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
