"""Fitting and sampling throughput of the learning generators (``ddpm`` presets, ``pca``).

Short probes, extrapolated: ``ddpm`` trains ``--fit-steps`` batches and generates ``--images``
variations (SDEdit at the preset's strength), ``pca`` fits on ``--pca-images`` 128 px images.
Prints a table and writes ``benchmarks/results/generators-<device>.json``. Throughputs are
images/s; the last column extrapolates the cpu-small budget (fit at the preset's steps + 3,584
variations, the 30% sample of issue 9).

    PYTHONPATH=src python benchmarks/bench_generators.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    import torch

    from synthmed.generators.ddpm import PRESETS, DdpmGenerator
    from synthmed.generators.pca import PcaGenerator

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="cpu-small")
    ap.add_argument("--fit-steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--pca-images", type=int, default=1536)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for preset in args.presets.split(","):
        gen = DdpmGenerator(preset=preset, steps=args.fit_steps, device=args.device)
        n = 4 * gen.batch
        images = torch.randint(0, 256, (n, 1, 128, 128), generator=g, dtype=torch.uint8)
        labels = torch.arange(n) % 4
        t = time.perf_counter()
        gen.fit(images, labels, seed=0, progress=False, log=lambda m, s: None)
        fit_ips = args.fit_steps * gen.batch / (time.perf_counter() - t)
        batch = images[: args.images].repeat(max(1, args.images // n + 1), 1, 1, 1)[: args.images]
        t = time.perf_counter()
        gen.generate(batch, torch.arange(len(batch)) % 4, variation=0, seed=1)
        gen_ips = len(batch) / (time.perf_counter() - t)
        steps = PRESETS[preset]["steps"]
        total = steps * gen.batch / fit_ips + 3584 / gen_ips
        rows.append({"generator": "ddpm", "preset": preset, "fit_img_per_s": fit_ips, "gen_img_per_s": gen_ips,
                     "params": sum(p.numel() for p in gen._unet.parameters()),
                     "budget_30pct_s": total, "preset_steps": steps})
    pca = PcaGenerator()
    images = torch.randint(0, 256, (args.pca_images, 1, 128, 128), generator=g, dtype=torch.uint8)
    t = time.perf_counter()
    pca.fit(images, torch.arange(args.pca_images) % 4, seed=0, progress=False, log=lambda m, s: None)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    pca.generate(images[:256], torch.arange(256) % 4, variation=0, seed=1)
    rows.append({"generator": "pca", "preset": "-", "fit_seconds": fit_s,
                 "gen_img_per_s": 256 / (time.perf_counter() - t)})
    print(f"{'generator':<8} {'preset':<10} {'fit img/s':>10} {'gen img/s':>10} {'30% budget s':>13}")
    for r in rows:
        print(f"{r['generator']:<8} {r['preset']:<10} {r.get('fit_img_per_s', float('nan')):>10.1f} "
              f"{r['gen_img_per_s']:>10.1f} {r.get('budget_30pct_s', float('nan')):>13.0f}"
              + (f"  (pca fit {r['fit_seconds']:.1f} s on {args.pca_images} images)" if "fit_seconds" in r else ""))
    out = Path(__file__).parent / "results" / f"generators-{args.device.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "threads": args.threads, "load_average": os.getloadavg(), "machine": platform.processor()
                               or platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
