"""Where a stacked (vmap) CNN training step spends its time, and what cuDNN autotuning and the models'
memory format change. A probe, not a benchmark of record: ``bench_gpu.py`` is that.

    python benchmarks/probe_gpu_step.py --data-dir ../shared/data/alzheimer_mri [--device cuda] [--steps 30]

Prints training images/s (real fraction 0.3, policy none, models built outside the timed part;
``bench_gpu.stacked_rate``) for k = 1, 4 and 25 stacked simulations, with
``torch.backends.cudnn.benchmark`` off and on and the models in channels_last or the standard
layout; then a profiler table of ten k=25 steps.

Run on an H200 on 2026-11-27, before the stacked loop (then ``fit_batched``) put the stacked parameters in the standard
layout itself: k=1 13,867; k=4 15,620; k=25 17,503 (channels_last models) and 19,514 (standard
layout) images/s; autotuning changed nothing beyond noise. The profile: ``copy_`` 34% of GPU time
(layout conversions and each epoch's move of the training sets), the first convolution as a
depthwise kernel (vmap turns a 1-channel convolution over k models into one) about 19%, max-pool
backward 11%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import stacked_rate, stacked_trainer  # noqa: E402

from synthmed.config import Config  # noqa: E402
from synthmed.data.loading import load_splits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--real-frac", type=float, default=0.3)
    args = ap.parse_args()
    splits = load_splits(Config(data_dir=args.data_dir, image_size=args.image_size, quiet=True))

    for autotune in (False, True):
        torch.backends.cudnn.benchmark = autotune
        for k, channels_last in ((1, True), (25, True), (25, False), (4, True)):
            rate = stacked_rate(splits, "none", k, args.steps, args, channels_last=channels_last)
            print(f"cudnn.benchmark={autotune} k={k:2d} channels_last={channels_last}: {rate:8.0f} images/s",
                  flush=True)
    torch.backends.cudnn.benchmark = False

    from torch.profiler import ProfilerActivity, profile

    train = stacked_trainer(splits, "none", 25, args)
    train(3)  # warm-up
    cuda = args.device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        train(10)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=70), flush=True)


if __name__ == "__main__":
    main()
