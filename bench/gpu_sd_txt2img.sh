#!/usr/bin/env bash
# The whole device check for bench/sd_txt2img.py, as one command on the nvidia-h200 machine:
# installs the carried wheels (bench/gpu_wheels.sh, .cache/wheels/) if the image's python lacks
# diffusers or pydantic, shows nvidia-smi, runs the benchmark and leaves the JSON record and the
# log in $OUT (bench/results when OUT is unset). Extra arguments go to bench/sd_txt2img.py.
#
#   bash bench/gpu_sd_txt2img.sh --runs 10          # device: carry [".cache/wheels"]
#   PYTHON=.venv/bin/python bash bench/gpu_sd_txt2img.sh --variant sd15-mini --size 64 --steps 2 --runs 1
set -uo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
out="${OUT:-bench/results}"
mkdir -p "$out"
if ! "$py" -c "import diffusers, pydantic" 2>/dev/null; then
    compgen -G ".cache/wheels/*.whl" >/dev/null || { echo "no .cache/wheels/*.whl: run bench/gpu_wheels.sh here and carry .cache/wheels"; exit 2; }
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .cache/wheels/*.whl || exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi
log=/dev/null
[ -n "${OUT:-}" ] && log="$OUT/sd_txt2img.log"
PYTHONUNBUFFERED=1 "$py" bench/sd_txt2img.py --out "$out" "$@" 2>&1 | tee "$log"
