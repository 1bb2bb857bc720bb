#!/usr/bin/env bash
# The one GPU run: the GPU tests, then the GPU benchmark, everything written under $OUT as it
# goes. docs/gpu.md says what comes back and how to read it.
#
#   OUT=/some/dir bash scripts/gpu_check.sh     # from anywhere; default OUT=gpu-check-out
#
# Needs: a CUDA GPU, python3 with torch, numpy, pillow, safetensors (pytest and pytest-timeout
# for the tests); no install of morphclimb (PYTHONPATH=src), no network. The data, the CIFAR-10
# JPEG archive, must be at gpu-data/cifar10-jpeg.tar.gz (git-ignored; `python3
# scripts/gpu_data.py` copies it there from ../shared/data, and does so here if it can).
#
# A dry run on a CPU: GPU_CHECK_ARGS="--smoke --no-processes" GPU_CHECK_SECONDS=200 OUT=/tmp/x
# bash scripts/gpu_check.sh (the GPU tests skip; the benchmark runs its smoke sizes).
#
# Time: GPU_CHECK_SECONDS (default 480) for the whole script. The tests get at most 200 s (90 s
# a test); the benchmark gets what is left minus a 45 s margin as its --budget, and is killed
# 30 s after that budget if it has not ended; the search journal is copied after it in any
# case. So the script ends within GPU_CHECK_SECONDS, results written as it goes:
#   console.txt           everything this script printed (stdout and stderr)
#   gpu-tests.txt         the full pytest output of the GPU tests
#   results.md/.json      the benchmark's tables (json rewritten after every row)
#   log.txt               the benchmark's own log (stdout and stderr)
#   search-journal.jsonl  the benchmark search's journal (copied as it grows, and at the end)
#   summary.txt           exit status and seconds of each stage
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/console.txt") 2>&1
TEE=$!
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TOTAL=${GPU_CHECK_SECONDS:-480}
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
stage() { echo "$1 rc=$2 at ${3}s" >> "$OUT/summary.txt"; echo "== $1: exit status $2, ${3} s in"; }

echo "== gpu_check.sh $(date -u +%FT%TZ) in $PWD, OUT=$OUT, ${TOTAL} s in all"
git log -1 --format='commit %H %s' 2>/dev/null || true
git status --short 2>/dev/null | head -20
nvidia-smi -L || echo "nvidia-smi: not available"
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

DATA=gpu-data/cifar10-jpeg.tar.gz
if [ ! -f "$DATA" ]; then
    python3 scripts/gpu_data.py || echo "no $DATA: the benchmark will stop at once (carry it)"
fi

# 1. the GPU tests (tests/test_gpu_bench.py, the ones named *on_gpu*), full output kept
TIMEOUT_OPT=""
python3 -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OPT="--timeout 90"
timeout -k 5 200 python3 -m pytest -p no:cacheprovider -q -rA --durations=0 $TIMEOUT_OPT \
    tests/test_gpu_bench.py -k on_gpu > "$OUT/gpu-tests.txt" 2>&1
rc=$?
tail -n 15 "$OUT/gpu-tests.txt"
stage tests $rc "$(elapsed)"

# 2. the benchmark, with what is left minus a margin as its budget
BUDGET=$(( TOTAL - $(elapsed) - 45 ))
[ "$BUDGET" -lt 60 ] && BUDGET=60
echo "== benchmark: --budget $BUDGET"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS: extra arguments, e.g. "--smoke" for a CPU dry run
timeout -k 10 $(( BUDGET + 30 )) python3 benchmarks/gpu.py --out "$OUT" --budget "$BUDGET" \
    ${GPU_CHECK_ARGS:-}
rc=$?
stage benchmark $rc "$(elapsed)"

# 3. the search's journal, also if the benchmark was killed
if [ -f gpu-runs/search-s0/journal.jsonl ]; then
    cp gpu-runs/search-s0/journal.jsonl "$OUT/search-journal.jsonl"
fi
rm -f "$OUT"/.*.tmp
nvidia-smi --query-gpu=name,memory.used,memory.total,temperature.gpu --format=csv 2>/dev/null
stage done 0 "$(elapsed)"
exec >&- 2>&-
wait "$TEE" 2>/dev/null || true
