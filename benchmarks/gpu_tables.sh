#!/usr/bin/env bash
# GPU latency tables of issue 16 on one GPU, in about 9 minutes of wall time, partial results kept.
#
#   bash benchmarks/gpu_tables.sh [OUT]        # OUT: folder for the deliverables (default: $OUT)
#
# 1. the GPU family from NVML (zennas.latency.device) names the table <family>-torch-fp16-b64.json.gz
# 2. zennas profile: zennas-res, then zennas-idw, into that one table: torch, FP16, batch 64, 224 px,
#    CUDA-graph replay, operators in context (each minus its helpers-only twin)
# 3. zennas latency validate: 60 held-out members (seed 1) per space, timed the table's way, --fit
# 4. zennas latency ARCH --table T --measure on one of them: predicted next to measured
# Each step appends a section to OUT/RESULTS-gpu.md as it finishes.
#
# Time: every step has a soft limit (--time-limit: no new chunk after it; what was measured is written)
# inside a hard `timeout`, all within BUDGET_S (default 530 s) from the start: each step keeps the planned
# time of the steps after it, so an overrun shortens the later ones. Planned soft limits on an
# H100: profile 110 s per space, validate 100 s per space, the --measure check about 20 s; plus about
# 10-15 s per command for start-up and the chunk in flight at its limit (about 515 s in all). The
# earlier eager H100 profile (benchmarks/RESULTS.md) measured 1,692 operators in 455 s; graph replay
# with a helpers-only twin per operator costs more per operator, so the grid is drawn from --samples 60
# members in member order and the time limit decides how many are covered.
#
# Rerunning continues where the last run stopped: the table and the validation logs live in STATE
# (default /tmp/zennas-gpu-tables, which survives between calls on a warm machine); OUT gets copies.
# OUT receives at most 8 files: the table, RESULTS-gpu.md, gpu_tables.log, and per space the validation
# JSON and its plot (plus the profile's partial file if a hard timeout stopped it before it wrote the table).
#
# ZENNAS_GPU_TABLES_DRY=1: the same steps on the CPU at toy sizes (torch eager, fp32, batch 2, 32 px,
# a few operators and networks, seconds per step), to check the script end to end without a GPU.

set -uo pipefail
OUT_DIR="${1:-${OUT:-}}"
[[ -n "$OUT_DIR" ]] || { echo "usage: bash benchmarks/gpu_tables.sh OUT_FOLDER (or set OUT)"; exit 2; }
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.."
command -v zennas >/dev/null 2>&1 || pip install --no-deps --no-build-isolation -e .  # the caller installs it
STATE="${ZENNAS_GPU_STATE:-/tmp/zennas-gpu-tables}"
DRY="${ZENNAS_GPU_TABLES_DRY:-0}"
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR" "$STATE"
exec > >(tee -a "$OUT_DIR/gpu_tables.log") 2>&1
START=$(date +%s)

if [[ "$DRY" == 1 ]]; then
    # the validation members are the grid's own (seed 0): a 4-member grid covers few others
    DEVICE=cpu PRECISION=fp32 BATCH=2 RES=32 CLASSES=10 TIMING=eager FAMILY=cpu-dry VALIDATE_SEED=0
    PROFILE_SAMPLES=4 PROFILE_S=20 VALIDATE_SAMPLES=4 VALIDATE_S=20 MEASURE_S=10 OVERHEAD_S=5
    BUDGET_S="${BUDGET_S:-150}"
    PROFILE_RUNS=(--runs 2 --rounds 1 --warmup-ms 0 --threads 1) VALIDATE_RUNS=(--runs 2 --rounds 1 --chunk 3)
else
    DEVICE=cuda PRECISION=fp16 BATCH=64 RES=224 CLASSES=1000 TIMING=graph VALIDATE_SEED=1
    PROFILE_SAMPLES=60 PROFILE_S=110 VALIDATE_SAMPLES=60 VALIDATE_S=100 MEASURE_S=20 OVERHEAD_S=15
    BUDGET_S="${BUDGET_S:-530}"
    PROFILE_RUNS=(--runs 10 --rounds 2 --chunk 16 --warmup-ms 20) VALIDATE_RUNS=(--runs 10 --rounds 3 --chunk 10)
    FAMILY=$("$PY" -c 'from zennas.latency.engines import get_engine
print(get_engine("torch", device="cuda", precision="fp16").identity().get("family") or "gpu")') || {
        echo "no usable CUDA device: run with ZENNAS_GPU_TABLES_DRY=1 to check the script on the CPU"
        exit 1
    }
fi
FAMILY_LC=$(echo "$FAMILY" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9._\n-' '-')  # a table name
NAME="${FAMILY_LC}-torch-${PRECISION}-b${BATCH}"
TABLE="$STATE/$NAME.json.gz"
RESULTS="$OUT_DIR/RESULTS-gpu.md"
echo "family $FAMILY, table $TABLE, budget ${BUDGET_S} s, out $OUT_DIR"

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# soft limit of a step: its plan, or what is left after keeping `reserve` seconds for the `later` steps
# after it, but at least an equal share of what is left
soft_limit() {
    local plan=$1 reserve=$2 later=$3 avail share
    avail=$(($(left) - reserve))
    share=$(($(left) / (later + 1)))
    ((avail < share)) && avail=$share
    ((avail < plan)) && plan=$avail
    echo "$plan"
}

publish() {
    for f in "$@"; do
        [[ -f "$f" ]] && ! [[ "$f" -ef "$OUT_DIR/$(basename "$f")" ]] && cp -f "$f" "$OUT_DIR/"
    done
    return 0
}

profile_space() {
    local space=$1 reserve=$2 later=$3 soft rc t0
    soft=$(soft_limit "$PROFILE_S" "$reserve" "$later")
    if ((soft < OVERHEAD_S)); then
        printf '\n## %s: %s not profiled (%s s left)\n' "$NAME" "$space" "$(left)" >>"$RESULTS"
        return
    fi
    t0=$(date +%s)
    timeout -k 10 $((soft + 40)) zennas profile --space "$space" --engine torch --device "$DEVICE" \
        --precision "$PRECISION" --batch-size "$BATCH" --resolution "$RES" --num-classes "$CLASSES" \
        --samples "$PROFILE_SAMPLES" "${PROFILE_RUNS[@]}" --timing "$TIMING" \
        --operators in-context --time-limit "$soft" --out "$TABLE"
    rc=$?
    "$PY" - "$TABLE" "$space" "$rc" "$(($(date +%s) - t0))" "$soft" >>"$RESULTS" <<'EOF'
import sys
from pathlib import Path
from zennas.latency.table import load_table

path, space, rc, seconds, soft = sys.argv[1:]
print(f"\n## {Path(path).name.split('.')[0]}: {space} operators profiled (exit {rc}, {seconds} s, limit {soft} s)\n")
if not Path(path).exists():
    print(f"no table written; partial file: {Path(path).name}.partial.jsonl")
    raise SystemExit
t = load_table(path)
h, d = t.header, t.header["device"]
print(f"device: {d.get('name')} (family {d.get('family')}), driver {d.get('driver_version')}, "
      f"torch {h['versions'].get('torch')}, cuDNN {h['versions'].get('cudnn')}")
print(f"timing: {h['timing']}")
print(f"command: `{h['source'].get('command')}`")
print(f"table: {len(t.entries)} entries ({h.get('entries_measured_this_run')} measured in this run, "
      f"{h.get('entries_floored_this_run', 0)} at the floor: no measurable cost beside their helpers)")
EOF
    publish "$TABLE" "$TABLE.partial.jsonl"
}

validate_space() {
    local space=$1 reserve=$2 later=$3 soft rc t0
    local report="$STATE/validate-$1.json" plot="$STATE/latency_validate_${FAMILY_LC}_$1.svg"
    soft=$(soft_limit "$VALIDATE_S" "$reserve" "$later")
    if ((soft < OVERHEAD_S)) || [[ ! -f "$TABLE" ]]; then
        printf '\n## %s: %s not validated (%s s left, table present: %s)\n' "$NAME" "$space" "$(left)" \
            "$([[ -f $TABLE ]] && echo yes || echo no)" >>"$RESULTS"
        return
    fi
    t0=$(date +%s)
    timeout -k 10 $((soft + 45)) zennas latency validate --table "$TABLE" --space "$space" \
        --samples "$VALIDATE_SAMPLES" --seed "$VALIDATE_SEED" --device "$DEVICE" --num-classes "$CLASSES" \
        "${VALIDATE_RUNS[@]}" \
        --fit --time-limit "$soft" --log "$STATE/validate-$space.jsonl" --plot "$plot" --json >"$report.tmp"
    rc=$?
    [[ $rc == 0 ]] && mv -f "$report.tmp" "$report"
    "$PY" - "$report" "$space" "$rc" "$(($(date +%s) - t0))" "$(basename "$plot")" \
        "$STATE/validate-$space.jsonl" >>"$RESULTS" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np

report, space, rc, seconds, plot, log = sys.argv[1:]
print(f"\n### validation on {space} (exit {rc}, {seconds} s)\n")
if rc != "0" or not Path(report).exists():
    done = sum(1 for _ in open(log)) if Path(log).exists() else 0
    print(f"no report: {done} networks measured so far are kept in the log; rerun the script to finish")
    raise SystemExit
r = json.loads(Path(report).read_text())
s = r["settings"]
print(f"command: `zennas latency validate --space {space} --samples {s['samples']} --seed {s['seed']} "
      f"--runs {s['runs']} --rounds {s['rounds']} --chunk {s['chunk']} --fit` on {s['device']}, "
      f"{s['precision']}, batch {s['batch_size']}, {s['resolution']} px, cuda_graph {s['cuda_graph']}\n")
print("| space | networks (outside table, not measured in time) | within +-10% | within +-5% | MAPE | Spearman "
      "| held-out within 10%: raw -> affine fit |")
print("|---|---|---|---|---|---|---|")
fit = r.get("fit") or {}
held = (f"{fit['held_out_before']['within_10pct']:.1%} -> {fit['held_out_after']['within_10pct']:.1%} "
        f"(n {fit['held_out_after']['n']})") if fit else "-"
print(f"| {space} | {r['n']} ({s['outside_table']}, {s['not_measured_in_time']}) | {r['within_10pct']:.1%} "
      f"| {r['within_5pct']:.1%} | {r['mape']:.2f}% | {r['spearman']:.4f} | {held} |\n")
nets = r["networks"]
measured = np.array([n["measured_ms"] for n in nets])
ratio = np.array([n["predicted_ms"] for n in nets]) / measured
small = measured <= np.median(measured)
p10, p50, p90 = np.percentile(ratio, [10, 50, 90])
print(f"predicted/measured: median {p50:.3f} (p10 {p10:.3f}, p90 {p90:.3f}); median {np.median(ratio[small]):.3f} "
      f"at or below the median latency, {np.median(ratio[~small]):.3f} above it; measured "
      f"{measured.min():.2f}-{measured.max():.2f} ms per batch")
if fit:
    print(f"affine fit: measured = {fit['intercept_ms']:.4f} ms + {fit['slope']:.4f} x sum")
print(f"plot: {plot}")
print("target (>= 90% within +-10%, Spearman >= 0.98): "
      + ("met" if r["within_10pct"] >= 0.9 and r["spearman"] >= 0.98 else "not met"))
EOF
    publish "$report" "$plot"
}

measure_one() {
    local report="$STATE/validate-zennas-res.json" arch soft
    soft=$(soft_limit $((MEASURE_S + 20)) 0 0)
    if ((soft < 15)) || [[ ! -f "$report" ]]; then
        return
    fi
    arch=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["networks"][0]["arch"])' "$report")
    {
        printf '\n### predicted next to measured: one network\n\n```\n'
        echo "zennas latency ARCH --table $NAME.json.gz -r $RES --num-classes $CLASSES --measure --runs 50"
        timeout -k 5 "$soft" zennas latency "$arch" --table "$TABLE" -r "$RES" --num-classes "$CLASSES" \
            --device "$DEVICE" --measure --runs 50 2>&1
        printf '```\n'
    } >>"$RESULTS"
}

printf '\n# GPU latency tables (benchmarks/gpu_tables.sh) - %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" >>"$RESULTS"
# Each step keeps the planned time of the steps after it (but takes at least an equal share of what is left).
profile_space zennas-res $((PROFILE_S + 2 * VALIDATE_S + MEASURE_S + 4 * OVERHEAD_S)) 4
profile_space zennas-idw $((2 * VALIDATE_S + MEASURE_S + 3 * OVERHEAD_S)) 3
validate_space zennas-res $((VALIDATE_S + MEASURE_S + 2 * OVERHEAD_S)) 2
validate_space zennas-idw $((MEASURE_S + OVERHEAD_S)) 1
measure_one
printf '\ntotal %s s of a %s s budget\n' "$(($(date +%s) - START))" "$BUDGET_S" >>"$RESULTS"
publish "$TABLE"
echo "done in $(($(date +%s) - START)) s; results in $RESULTS"
