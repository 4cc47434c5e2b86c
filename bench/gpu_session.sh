#!/usr/bin/env bash
# One call on a lent GPU machine (issue 16): the gpu-marked parity tests and bench/bench_gpu.py.
#
# Run from the repository root, on the device machine, in ONE call of about 10 minutes:
#
#     bash bench/gpu_session.sh            # results under $OUT (default /tmp/gpu_session)
#
# What it needs there: python3 with numpy, numba, scipy, tqdm, pytest, CuPy, torch and torchdiffeq
# (the lent H200's image has all of them: cupy-cuda13x 14.2, torch 2.11, torchdiffeq 0.2.5). If
# CuPy is missing it installs wheels carried in .whl/ (see /work/.library/device/README.md: no
# network there); without them the gpu tests skip with the reason and the bench stops.
#
# What comes back under $OUT (8 files at most, all small):
#   doctor.txt         python -m nodeform doctor: versions, which backends work and why not
#   pytest-gpu.txt     the gpu-marked tests (parity of chapters 4-7, primitives, solver, adjoint)
#   bench.txt          bench_gpu.py's output
#   RESULTS-gpu.md     bench/RESULTS-gpu.md with its models section rewritten: copy it over the file
#   RESULTS-gpu.json   the same numbers for chapters/ch08_gpu.py: copy it to bench/RESULTS-gpu.json
#   summary.txt        exit codes and seconds of each part
#
# Time budget (each part has its own timeout, so the whole stays under ~9.5 minutes):
# doctor 30 s, tests 240 s, bench 270 s.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PYTHON:-python3}
summary="$OUT/summary.txt"
: > "$summary"

part() {  # part NAME TIMEOUT_S LOGFILE COMMAND...
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    timeout "$limit" "$@" > "$log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$summary"
    return 0
}

if ! $PY -c "import cupy" 2>/dev/null; then
    if ls .whl/cupy*.whl > /dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
            && export PYTHONPATH="$PYTHONPATH:/tmp/site"
        echo "cupy: installed from .whl/" | tee -a "$summary"
    else
        echo "cupy: not importable and no wheel in .whl/; the gpu tests will skip" | tee -a "$summary"
    fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$summary" 2>&1

part doctor 30 "$OUT/doctor.txt" $PY -m nodeform doctor
part tests 240 "$OUT/pytest-gpu.txt" $PY -m pytest -m gpu -q -rs -p no:cacheprovider \
    tests/test_gpu_models.py tests/test_gpu.py tests/test_autodiff_tensor.py tests/test_nn_conv.py
cp bench/RESULTS-gpu.md "$OUT/RESULTS-gpu.md"
part bench 270 "$OUT/bench.txt" $PY bench/bench_gpu.py --out "$OUT/RESULTS-gpu.md"
tail -n 3 "$OUT/pytest-gpu.txt" >> "$summary"
cat "$summary"
