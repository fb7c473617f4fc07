"""Training throughput of the thesis's CNN on this machine: what channels_last and bf16 buy.

Ratios are measured in one run, on the same data and model, so they compare like with like:

    .venv/bin/python benchmarks/bench_training.py [--batches 40] [--image-size 128] [--device cpu]

Variants: a plain fp32 loop (NCHW), synthmed's loop with precision=fp32 (channels_last), and
synthmed's loop with precision=bf16 (channels_last + bf16 autocast; what precision=auto picks on
CPUs with AVX-512 bf16 and on bf16 GPUs).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from synthmed.config import Config
from synthmed.data.base import ImageSet
from synthmed.plugins import registry
from synthmed.training import fit


def plain_fp32(model, data: ImageSet, batch: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for start in range(0, len(data), batch):
        x = data.images[start:start + batch].float() / 255
        loss = F.cross_entropy(model(x), data.labels[start:start + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    n = args.batches * args.batch_size
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 1, args.image_size, args.image_size), generator=g, dtype=torch.uint8),
                    torch.randint(0, 4, (n,), generator=g))
    factory = registry("models").get(args.model)()
    policy = registry("policies").get("none")()

    def synthmed_loop(precision: str):
        cfg = Config(model=args.model, image_size=args.image_size, epochs=1, batch_size=args.batch_size,
                     precision=precision, device=args.device, quiet=True)

        def run(model):
            model.to(memory_format=torch.channels_last)
            fit(model, policy, data, None, cfg, args.device, lambda m, step=None: None)
        return run

    variants = {
        "plain fp32 (NCHW)": lambda m: plain_fp32(m, data, args.batch_size),
        "synthmed fp32 (channels_last)": synthmed_loop("fp32"),
        "synthmed bf16 (channels_last+autocast)": synthmed_loop("bf16"),
    }
    results = {}
    for name, run in variants.items():
        best = float("inf")
        for _ in range(args.repeats):
            torch.manual_seed(0)
            model = factory.create(4, args.image_size, Config(model=args.model)).to(args.device)
            t = time.perf_counter()
            run(model)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        results[name] = n / best
    base = results["plain fp32 (NCHW)"]
    print(f"{args.model}, batch {args.batch_size}, {args.image_size}px, {n} images, device {args.device}, "
          f"torch threads {torch.get_num_threads()} (best of {args.repeats})")
    for name, rate in results.items():
        print(f"  {name:42s} {rate:8.0f} img/s   x{rate / base:.2f}")


if __name__ == "__main__":
    main()
