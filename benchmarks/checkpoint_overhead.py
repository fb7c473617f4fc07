"""What checkpoints cost a run (issue 22's target: at most 2% of the run's time).

Trains the same run twice in this process — checkpoints off, then every ``--every`` seconds (far denser
than the default 300 s, so there is something to measure) — and reads the run's own record: the time
spent writing checkpoints (``checkpoint_seconds``), how many were written and the training loop's time
(``train_seconds``). It also times the checks every step makes (is a checkpoint due, is a stop pending)
and writes one ``ldm`` fit checkpoint of the ``cpu`` preset's size. Prints a Markdown table.

    python benchmarks/checkpoint_overhead.py --data-dir ../shared/data/alzheimer_mri --epochs 6 --every 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--real-frac", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--every", type=float, default=5.0, help="checkpoint interval of the measured run (s)")
    args = parser.parse_args()

    import mlflow
    import torch

    import synthmed
    from synthmed.checkpoints import Checkpointer

    work = Path(tempfile.mkdtemp(prefix="synthmed-ckpt-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    common = dict(data_dir=args.data_dir, image_size=args.image_size, real_frac=args.real_frac, epochs=args.epochs,
                  gradcam=False, log_model=False, register="none", lookup=False, quiet=True, device="cpu",
                  precision="fp32", experiment="checkpoint-overhead", checkpoint_dir=str(work / "ckpt"))
    rows = []
    for every in (0.0, args.every):
        started = time.perf_counter()
        result = synthmed.train(checkpoint_every=every, **common)
        wall = time.perf_counter() - started
        m = mlflow.get_run(result.run_id).data.metrics
        rows.append((every, wall, m["train_seconds"], m.get("checkpoint_saves", 0.0), m.get("checkpoint_seconds", 0.0),
                     result.metrics["test_cross_entropy"]))

    ckpt = Checkpointer(work / "probe.pt", every=3600)
    n = 100_000
    t0 = time.perf_counter()
    for step in range(n):
        ckpt.step(lambda: {}, step)  # not due: the per-step cost every loop pays
    per_step = (time.perf_counter() - t0) / n

    from synthmed.generators.ldm import LdmGenerator

    gen = LdmGenerator()
    ae, unet = gen._build_ae(128), gen._build_unet(4)  # the cpu preset's networks at 128 px
    opt = torch.optim.AdamW(unet.parameters())
    for p in unet.parameters():  # an optimizer state of full size
        p.grad = torch.zeros_like(p)
    opt.step()
    state = {"autoencoder": ae.state_dict(), "parts": {"unet": unet.state_dict(), "ema": unet.state_dict(),
                                                     "opt": opt.state_dict()}}
    fit_ckpt = Checkpointer(work / "fit.ckpt", every=1)
    fit_ckpt.save(state)
    size_mb = (work / "fit.ckpt").stat().st_size / 2**20

    print(f"| checkpoint_every | run wall s | train_seconds | saves | writing s | share of train time | test CE |")
    print("|---|---|---|---|---|---|---|")
    for every, wall, train_s, saves, ckpt_s, ce in rows:
        share = ckpt_s / train_s if train_s else 0.0
        print(f"| {every:g} s | {wall:.1f} | {train_s:.1f} | {saves:.0f} | {ckpt_s:.3f} | {share:.2%} | {ce:.4f} |")
    (_, _, train_s, saves, ckpt_s, _) = rows[1]
    per_save = ckpt_s / saves if saves else float("nan")
    print(f"\none training checkpoint: {per_save * 1000:.1f} ms to write; at the default 300 s that is "
          f"{per_save / 300:.3%} of the time between two")
    print(f"the per-step check (due? stop pending?): {per_step * 1e6:.2f} µs")
    print(f"one ldm fit checkpoint (cpu preset, 128 px, with EMA and optimizer): {size_mb:.1f} MiB, "
          f"{fit_ckpt.seconds * 1000:.0f} ms to write ({fit_ckpt.seconds / 300:.3%} of 300 s)")
    print(f"\nruns off vs on differ by {rows[1][2] - rows[0][2]:+.1f} s of training time (noise included)")


if __name__ == "__main__":
    main()
