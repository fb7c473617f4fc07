"""synthmed against the plain PyTorch pipeline with the same model, on the real data, in one run.

    python benchmarks/bench_speed.py --data-dir ../shared/data/alzheimer_mri [--simulations 3] [--epochs 1]

Measures, both sides in the same run (so the ratios compare like with like on a shared machine):

1. training images/s with policies ``none`` and ``autoaugment`` (the plain pipeline of
   ``benchmarks/plain_pipeline.py`` as a subprocess; synthmed's ``training.fit`` in this process);
2. wall time of S simulations (cnn, real fraction 0.3, ``none``) as one ``synthmed sweep``
   subprocess against S plain runs one after another (subprocesses); the sweep runs as users run
   it, every child logging its Grad-CAM panel, and once more with ``--gradcam false``: the
   difference over S is what the panel adds per run;
3. ``synthmed --help`` start-up time (median of 5 subprocesses);
4. peak RSS of both (``/usr/bin/time -f %M`` around each child, else ``RUSAGE_CHILDREN``);
5. the fraction of this machine's measured matmul rate (fp32 and bf16, a large matmul timed here)
   that synthmed's training step reaches (FLOPs per image from ``FlopCounterMode``, fwd+bwd).

Prints a table and writes ``benchmarks/results/bench-<device>.json`` with the machine's details.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


BASE_ENV = dict(os.environ)  # as the benchmark was started: the plain pipeline runs in it


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(BASE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process."""
    time_bin = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        full = [time_bin, "-f", "%M", "-o", rss.name, *cmd] if time_bin else cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        proc = subprocess.run(full, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        if time_bin:
            peak_kb = float(rss.read().strip().splitlines()[-1])
        else:  # the children's maximum so far: exact only if this child is the largest yet
            peak_kb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return wall, peak_kb / 1024, proc.stdout


def machine() -> dict[str, object]:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def matmul_rate(dtype_name: str, device: str, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul (best of ``repeats``)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_image(model, image_size: int, device: str, batch: int = 32) -> float:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 1, image_size, image_size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def synthmed_rate(splits, policy_name: str, args, device: str) -> float:
    """synthmed's training step (``training.fit`` with the CNN's training forward, as ``train`` runs it)
    on a real sample: images/s after a warm-up."""
    import torch

    from synthmed.config import Config
    from synthmed.plugins import registry
    from synthmed.training import fit, sample_real

    config = Config(data_dir=args.data_dir, real_frac=args.real_frac, policy=policy_name, device=device,
                    image_size=args.image_size, quiet=True, seed=0)
    real, _ = sample_real(splits, config)
    policy = registry("policies").get(policy_name)()
    factory = registry("models").get("cnn")()

    def model():
        torch.manual_seed(0)
        return factory.create(splits.num_classes, args.image_size, config).to(device).to(memory_format=torch.channels_last)

    warm = model()
    fit(warm, policy, real, None, config, device, lambda *a, **k: None, max_steps=2,
        forward=factory.training_forward(warm))  # warm-up
    m = model()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    fit(m, policy, real, None, config, device, lambda *a, **k: None, max_steps=args.batches,
        forward=factory.training_forward(m))  # as train() runs it
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return args.batches * config.batch_size / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--simulations", type=int, default=3, help="S of measurement 2 (the issue's target: 20)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of each simulation in measurement 2")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per throughput measurement")
    ap.add_argument("--real-frac", type=float, default=0.3)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: rate,sweep,startup,flops")
    ap.add_argument("--output", default=None, help="results file [default: benchmarks/results/bench-<device>.json]")
    args = ap.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    skip = set(filter(None, args.skip.split(",")))

    from synthmed.runtime import precision_name, tune_memory

    tune_memory()  # as the CLI does, before torch allocates (this process measures synthmed's step)
    import torch

    from synthmed.config import Config
    from synthmed.data.loading import load_splits
    from synthmed.plugins import registry

    device = args.device
    results: dict[str, object] = {"machine": machine(), "args": vars(args), "measurements": {}, "ratios": {}}
    m, ratios = results["measurements"], results["ratios"]
    py = sys.executable
    env = child_env()
    plain = [py, str(HERE / "plain_pipeline.py"), "--data-dir", args.data_dir, "--real-frac", str(args.real_frac),
             "--image-size", str(args.image_size), "--device", device]
    config = Config(data_dir=args.data_dir, device=device, image_size=args.image_size, quiet=True)
    m["synthmed_precision"] = precision_name(config, device)

    # 1. training images/s
    if "rate" not in skip:
        splits = load_splits(config)
        for policy in ("none", "autoaugment"):
            _, _, out = run_child(plain + ["--policy", policy, "--max-batches", str(args.batches + 2),
                                           "--warmup-batches", "2", "--no-test", "--epochs", "100"], env)
            p = json.loads(out.strip().splitlines()[-1])["images_per_s"]
            s = synthmed_rate(splits, policy, args, device)
            m[f"images_per_s.{policy}"] = {"plain": p, "synthmed": s}
            ratios[f"images/s {policy} (synthmed / plain)"] = s / p
            print(f"images/s {policy}: plain {p:.1f}, synthmed {s:.1f}", flush=True)

    # 5. fraction of the matmul rate
    if "flops" not in skip and "rate" in m or ("flops" not in skip and "images_per_s.none" in m):
        factory = registry("models").get("cnn")()
        model = factory.create(4, args.image_size, config).to(device)
        fpi = flops_per_image(model, args.image_size, device)
        rate = m["images_per_s.none"]["synthmed"]
        m["flops_per_training_image"] = fpi
        for dt in ("float32", "bfloat16"):
            peak = matmul_rate(dt, device)
            m[f"matmul_flops_per_s.{dt}"] = peak
            ratios[f"step FLOP/s / matmul {dt} FLOP/s"] = rate * fpi / peak
        print(f"{fpi / 1e9:.3f} GFLOP per training image", flush=True)

    # 2 and 4. S simulations: one sweep against S plain runs; peak RSS of both
    if "sweep" not in skip:
        S = args.simulations
        with tempfile.TemporaryDirectory() as tmp:
            sweep_env = child_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"})
            sweep_cmd = [py, "-m", "synthmed.cli", "sweep", "--models", "cnn", "--policies", "none",
                         "--real-fracs", str(args.real_frac), "--simulations", str(S), "--epochs", str(args.epochs),
                         "--data-dir", args.data_dir, "--image-size", str(args.image_size), "--device", device,
                         "--experiment", "bench", "--quiet"]
            sweep_wall, sweep_rss, _ = run_child(sweep_cmd, sweep_env)  # as users run it: every panel on
            # the same sweep without the per-run Grad-CAM panel, in a fresh store: what the panel adds
            bare_env = child_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/bare.db"})
            bare_wall, _, _ = run_child(sweep_cmd + ["--gradcam", "false"], bare_env)
        plain_walls, plain_rss = [], []
        for i in range(S):
            w, r, _ = run_child(plain + ["--epochs", str(args.epochs), "--seed", str(i)], env)
            plain_walls.append(w)
            plain_rss.append(r)
        m["simulations"] = {"S": S, "epochs": args.epochs, "synthmed_sweep_s": sweep_wall,
                            "synthmed_sweep_without_gradcam_s": bare_wall,
                            "plain_sequential_s": sum(plain_walls), "plain_each_s": plain_walls}
        m["gradcam_panel_per_run_s"] = (sweep_wall - bare_wall) / S
        m["peak_rss_mb"] = {"synthmed_sweep": sweep_rss, "plain": max(plain_rss)}
        ratios[f"{S} simulations wall time (plain / synthmed)"] = sum(plain_walls) / sweep_wall
        ratios["peak RSS (synthmed / plain)"] = sweep_rss / max(plain_rss)
        print(f"{S} simulations: sweep {sweep_wall:.1f} s ({bare_wall:.1f} s without the Grad-CAM panels), "
              f"plain {sum(plain_walls):.1f} s", flush=True)

    # 3. start-up
    if "startup" not in skip:
        times = [run_child([py, "-m", "synthmed.cli", "--help"], env)[0] for _ in range(5)]
        m["cli_help_s"] = {"median": statistics.median(times), "all": times}

    results["machine"]["loadavg_end"] = os.getloadavg()
    targets = {"images/s none (synthmed / plain)": ">= 2.5", "peak RSS (synthmed / plain)": "<= 1.3"}
    print(f"\nsynthmed ({m['synthmed_precision']}) vs plain PyTorch pipeline, same model; "
          f"{results['machine']['cpu']}, {results['machine']['cores']} cores, torch {torch.__version__}")
    print(f"{'measure':48s} {'ratio':>8s}  target")
    for name, value in ratios.items():
        target = targets.get(name, ">= 3" if "simulations" in name else "")
        print(f"{name:48s} {value:8.2f}  {target}")
    if "gradcam_panel_per_run_s" in m:
        print(f"{'Grad-CAM panel per sweep run (with - without) / S, s':48s} {m['gradcam_panel_per_run_s']:8.2f}")
    if "cli_help_s" in m:
        print(f"{'synthmed --help start-up (median of 5), s':48s} {m['cli_help_s']['median']:8.2f}  <= 0.5")
    out = Path(args.output) if args.output else HERE / "results" / f"bench-{device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
