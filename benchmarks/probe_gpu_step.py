"""Where a stacked (vmap) CNN training step spends its time, and what cuDNN autotuning and the models'
memory format change. A probe, not a benchmark of record: ``bench_gpu.py`` is that.

    python benchmarks/probe_gpu_step.py --data-dir ../shared/data/alzheimer_mri [--device cuda] [--steps 30]

Prints training images/s (real fraction 0.3, policy none, models built outside the timed part) for
k = 1, 4 and 25 stacked simulations, with ``torch.backends.cudnn.benchmark`` off and on and the
models in channels_last or the standard layout; then a profiler table of ten k=25 steps.

Run on an H200 on 2026-11-27, before ``fit_batched`` put the stacked parameters in the standard
layout itself: k=1 13,867; k=4 15,620; k=25 17,503 (channels_last models) and 19,514 (standard
layout) images/s; autotuning changed nothing beyond noise. The profile: ``copy_`` 34% of GPU time
(layout conversions and each epoch's move of the training sets), the first convolution as a
depthwise kernel (vmap turns a 1-channel convolution over k models into one) about 19%, max-pool
backward 11%.
"""

from __future__ import annotations

import argparse
import time

import torch

from synthmed.config import Config
from synthmed.data.loading import load_splits
from synthmed.plugins import registry
from synthmed.sweep.batched import fit_batched
from synthmed.training import fit, sample_real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=128)
    args = ap.parse_args()
    dev, size = args.device, args.image_size
    splits = load_splits(Config(data_dir=args.data_dir, image_size=size, quiet=True))
    factory, policy = registry("models").get("cnn")(), registry("policies").get("none")()

    def setup(k: int):
        configs = [Config(data_dir=args.data_dir, real_frac=0.3, device=dev, image_size=size, quiet=True, seed=i)
                   for i in range(k)]
        return configs, [sample_real(splits, c)[0] for c in configs]

    def models(configs, channels_last: bool):
        out = []
        for c in configs:
            torch.manual_seed(c.seed)
            m = factory.create(splits.num_classes, size, c).to(dev)
            out.append(m.to(memory_format=torch.channels_last) if channels_last else m)
        return out

    def sync() -> None:
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def train(ms, configs, sets, steps: int) -> None:
        if len(ms) == 1:
            fit(ms[0], policy, sets[0], None, configs[0], dev, lambda *a, **kw: None, max_steps=steps)
        else:
            fit_batched(ms, policy, sets, [None] * len(ms), configs, dev, [lambda *a, **kw: None] * len(ms),
                        max_steps=steps)

    def rate(k: int, channels_last: bool) -> float:
        configs, sets = setup(k)
        train(models(configs, channels_last), configs, sets, 3)  # warm-up
        ms = models(configs, channels_last)
        sync()
        t = time.perf_counter()
        train(ms, configs, sets, args.steps)
        sync()
        return k * args.steps * configs[0].batch_size / (time.perf_counter() - t)

    for autotune in (False, True):
        torch.backends.cudnn.benchmark = autotune
        for k, channels_last in ((1, True), (25, True), (25, False), (4, True)):
            print(f"cudnn.benchmark={autotune} k={k:2d} channels_last={channels_last}: "
                  f"{rate(k, channels_last):8.0f} images/s", flush=True)
    torch.backends.cudnn.benchmark = False

    from torch.profiler import ProfilerActivity, profile

    configs, sets = setup(25)
    ms = models(configs, True)
    train(ms, configs, sets, 3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        train(ms, configs, sets, 10)
        sync()
    key = "self_cuda_time_total" if dev.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=70), flush=True)


if __name__ == "__main__":
    main()
