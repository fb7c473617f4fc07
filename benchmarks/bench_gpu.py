"""Issue 11's GPU targets, measured on the real data in one run:

    python benchmarks/bench_gpu.py --data-dir ../shared/data/alzheimer_mri --device cuda \
        [--simulations 100] [--epochs 10] [--parts scaling,sweep]

1. ``scaling``: training images/s of the CNN (real fraction 0.3, 128 px, batch 32) with k
   simulations stacked (``training.fit_stack``; k=1 is ``training.fit``, the same loop), policy ``none``,
   and the augmenting policies at the sweep's default k.
2. ``sweep``: S simulations (cnn, real fraction 0.3, ``none`` or ``--sweep-policy``, E epochs) as one ``synthmed sweep``
   subprocess, as users run it (``--parallel-simulations auto``), without the per-run Grad-CAM panel
   (its cost is ``bench_speed.py``'s). Reports the wall time, the training time (the sum over the
   stacked groups of their ``train_seconds``), the runs' median test cross-entropy and the class
   prior's.
3. The Chapter 7 CNN grid (none, basic, AutoAugment, synthetic x real fractions 0.3..0.8, 1.0 x S
   simulations x E epochs; the cells at 1.0 shared): an **estimate** of its training time from the
   rates of part 1, and of its wall time adding part 2's measured cost per run outside training.
   It is not a measurement of the grid: generation (the synthetic policy's generator) is not in it.

Writes ``benchmarks/results/bench-gpu.json`` (or ``--output``) with the machine's details.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_speed import child_env, machine  # noqa: E402

CHAPTER7_FRACS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stacked_trainer(splits, policy_name: str, k: int, args, channels_last: bool = True):
    """``train(steps) -> seconds``: k fresh simulations stacked (k=1: ``training.fit``) for that many steps.

    Each call builds fresh models outside the timed part (a sweep builds them while it samples);
    ``args`` gives ``data_dir``, ``real_frac``, ``device`` and ``image_size``.
    """
    import torch

    from synthmed.config import Config
    from synthmed.plugins import registry
    from synthmed.training import Member, fit, fit_stack, sample_real, stack

    factory = registry("models").get("cnn")()
    policy = registry("policies").get(policy_name)()
    configs = [Config(data_dir=args.data_dir, real_frac=args.real_frac, policy=policy_name, device=args.device,
                      image_size=args.image_size, quiet=True, seed=i) for i in range(k)]
    sets = [sample_real(splits, c)[0] for c in configs]

    def models():
        out = []
        for c in configs:
            torch.manual_seed(c.seed)
            model = factory.create(splits.num_classes, args.image_size, c).to(args.device)
            out.append(model.to(memory_format=torch.channels_last) if channels_last else model)
        return out

    def train(max_steps: int) -> float:
        fresh = models()
        sync(args.device)
        t = time.perf_counter()
        if k == 1:
            fit(fresh[0], policy, sets[0], None, configs[0], args.device, lambda *a, **kw: None, max_steps=max_steps)
        else:
            members = [Member(s, None, c, lambda *a, **kw: None) for s, c in zip(sets, configs)]
            fit_stack(stack(fresh), policy, members, args.device, max_steps=max_steps)
        sync(args.device)
        return time.perf_counter() - t

    return train


def stacked_rate(splits, policy_name: str, k: int, steps: int, args, channels_last: bool = True) -> float:
    """Training images/s of k simulations stacked (k=1: ``training.fit``), after a warm-up."""
    from synthmed.config import Config

    train = stacked_trainer(splits, policy_name, k, args, channels_last)
    train(3)  # warm-up: kernels chosen, memory allocated
    return k * steps * Config().batch_size / train(steps)


def run_sweep(args, store: str) -> dict[str, object]:
    import mlflow

    cmd = [sys.executable, "-m", "synthmed.cli", "sweep", "--models", "cnn", "--policies", args.sweep_policy,
           "--real-fracs", str(args.real_frac), "--simulations", str(args.simulations), "--epochs", str(args.epochs),
           "--image-size", str(args.image_size), "--device", args.device, "--data-dir", args.data_dir,
           "--gradcam", "false", "--experiment", "gpu-bench", "--quiet"]
    env = child_env({"MLFLOW_TRACKING_URI": store})
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("gpu-bench")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=5000)
            if r.data.tags.get("synthmed.sweep") != "1"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    ks = [int(r.data.tags.get("synthmed.batched", "1")) for r in finished]
    train_s = sum(r.data.metrics["train_seconds"] / k for r, k in zip(finished, ks))  # each group counted once
    ce = [r.data.metrics["test_cross_entropy"] for r in finished]
    params = finished[0].data.params if finished else {}
    return {"S": args.simulations, "epochs": args.epochs, "finished": len(finished), "wall_s": wall,
            "train_s": train_s, "stacked_k": sorted(set(ks)), "outside_training_per_run_s": (wall - train_s) / max(len(finished), 1),
            "median_test_cross_entropy": statistics.median(ce) if ce else None,
            "test_cross_entropy_range": [min(ce), max(ce)] if ce else None,
            "optimizer_steps": params.get("optimizer_steps"), "precision_used": params.get("precision_used"),
            "device_used": params.get("device_used"), "sweep_stdout_tail": proc.stdout[-1500:]}


def class_prior_ce(splits) -> float:
    import torch

    counts = torch.bincount(splits.train.labels, minlength=splits.num_classes).double()
    prior = counts / counts.sum()
    test = torch.bincount(splits.test.labels, minlength=splits.num_classes).double()
    return float(-(test * prior.log()).sum() / test.sum())


def grid_estimate(splits, rates: dict[str, float], per_run_outside_s: float | None, args) -> dict[str, object]:
    """Training images of the Chapter 7 CNN grid, over the measured rates (an estimate, see the docstring)."""
    import torch

    counts = torch.bincount(splits.train.labels, minlength=splits.num_classes).tolist()
    full = sum(counts)
    seconds, runs = 0.0, 0
    for policy in ("none", "basic", "autoaugment", "synthetic"):
        for frac in CHAPTER7_FRACS:
            if policy == "synthetic" and frac == 1.0:
                continue  # synthetic at 1.0 adds no image: it shares none's runs
            n = full if policy == "synthetic" else sum(max(1, round(c * frac)) for c in counts)
            rate = rates.get(policy, rates["none"])  # synthetic trains on stored images without augmentation
            seconds += n * args.epochs * args.simulations / rate
            runs += args.simulations
    out = {"runs": runs, "training_s_estimate": seconds}
    if per_run_outside_s is not None:
        out["wall_s_estimate"] = seconds + runs * per_run_outside_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--simulations", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--real-frac", type=float, default=0.3)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per scaling measurement")
    ap.add_argument("--ks", default="1,4,8,16,25,32,50", help="stack sizes of the scaling measurement")
    ap.add_argument("--parts", default="scaling,sweep")
    ap.add_argument("--sweep-policy", default="none", help="the policy of the sweep part")
    ap.add_argument("--output", default=str(HERE / "results" / "bench-gpu.json"))
    args = ap.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    parts = set(args.parts.split(","))

    from synthmed.config import Config
    from synthmed.data.loading import load_splits
    from synthmed.runtime import precision_name
    from synthmed.sweep.batched import balanced_groups, default_parallel_simulations

    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"machine": machine(), "args": vars(args)}

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=2) + "\n")

    config = Config(data_dir=args.data_dir, device=args.device, image_size=args.image_size, quiet=True)
    t = time.perf_counter()
    splits = load_splits(config)
    results["load_s"] = time.perf_counter() - t
    results["precision"] = precision_name(config, args.device)
    results["default_k"] = k_auto = default_parallel_simulations(args.device)
    results["class_prior_cross_entropy"] = prior = class_prior_ce(splits)
    print(f"device {args.device} ({results['machine'].get('gpu', results['machine']['cpu'])}), "
          f"precision {results['precision']}, default k {k_auto}, data loaded in {results['load_s']:.1f} s", flush=True)

    rates: dict[str, float] = {}
    if "scaling" in parts:
        scaling = results["images_per_s_by_k"] = {}
        for k in (int(s) for s in args.ks.split(",")):
            try:
                scaling[k] = stacked_rate(splits, "none", k, args.steps, args)
            except Exception as exc:  # record it and measure the rest: device time is scarce
                results.setdefault("errors", []).append(f"k={k}: {traceback.format_exc()}")
                print(f"none, k={k}: FAILED {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"none, k={k:3d}: {scaling[k]:9.0f} images/s ({scaling[k] / k:7.0f} per simulation)", flush=True)
            save()
        k_used = len(balanced_groups(list(range(args.simulations)), k_auto)[0])  # the sweep's stack size
        rates["none"] = scaling.get(k_used) or stacked_rate(splits, "none", k_used, args.steps, args)
        for policy in ("basic", "autoaugment"):
            rates[policy] = stacked_rate(splits, policy, k_used, args.steps, args)
            print(f"{policy}, k={k_used}: {rates[policy]:9.0f} images/s", flush=True)
        results["images_per_s_by_policy"] = {"k": k_used, **rates}
        save()

    per_run_outside = None
    if "sweep" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            s = results["sweep"] = run_sweep(args, f"sqlite:///{tmp}/mlflow.db")
        per_run_outside = s["outside_training_per_run_s"]
        print(f"{args.simulations} simulations, {args.sweep_policy}, {args.epochs} epochs: wall {s['wall_s']:.1f} s, training "
              f"{s['train_s']:.1f} s (k {s['stacked_k']}), {s['finished']} finished; median test CE "
              f"{s['median_test_cross_entropy']:.4f} (class prior {prior:.4f}); outside training "
              f"{per_run_outside:.2f} s per run", flush=True)
        save()

    if rates:
        g = results["chapter7_grid_estimate"] = grid_estimate(splits, rates, per_run_outside, args)
        print(f"Chapter 7 CNN grid ({g['runs']} runs, {args.epochs} epochs) ESTIMATED from these rates: training "
              f"{g['training_s_estimate'] / 60:.1f} min"
              + (f", wall {g['wall_s_estimate'] / 60:.1f} min" if "wall_s_estimate" in g else ""), flush=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    save()
    print(f"written to {out_path}")


if __name__ == "__main__":
    main()
