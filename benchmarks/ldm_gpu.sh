#!/usr/bin/env bash
# The ldm `gpu` preset on the real data, in one device call (issue 21): fit on a 30% sample at 128 px, make
# its 3,584 variations, run the full inspect-generator with the fidelity–diversity curve, and write the
# printed table, the curve and the figures to $OUT (the device tool's output folder; ./ldm-gpu elsewhere).
#
#   bash benchmarks/ldm_gpu.sh /path/to/alzheimer_mri [extra generator options, e.g. steps=20000]
#
# Budget: about 10 minutes of an H100/H200 (the fit is most of it); `timeout` stops it at 9.5 minutes,
# keeping everything written so far (fits and images are cached atomically; rerunning resumes them).
set -euo pipefail
DATA=${1:?usage: ldm_gpu.sh DATA_DIR [generator options]}
EXTRA=${2:-}
OUT=${OUT:-./ldm-gpu}
mkdir -p "$OUT"
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" SYNTHMED_CACHE_DIR="$OUT/cache" HF_HUB_OFFLINE=1
OPTIONS="preset=gpu,device=cuda${EXTRA:+,$EXTRA}"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt" || true
start=$(date +%s)
timeout 570 synthmed inspect-generator --data-dir "$DATA" --generator ldm --generator-options "$OPTIONS" \
    --real-frac 0.3 --image-size 128 --device cuda --seed 0 --experiment ldm-gpu \
    --strengths 0.2,0.35,0.5,0.65,0.8,1.0 2>&1 | tee "$OUT/inspect.txt"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/inspect.txt"
python - "$OUT" <<'EOF'
import sys, pathlib, mlflow
out = pathlib.Path(sys.argv[1])
client = mlflow.MlflowClient()
for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
    for name in ("inspection/fidelity_diversity.png", "inspection/overview.png", "inspection/curve.md"):
        try:
            client.download_artifacts(run.info.run_id, name, str(out))
        except Exception as exc:  # noqa: BLE001 - report and go on: the printed table is in inspect.txt
            print(f"{name}: {exc}")
EOF
