#!/usr/bin/env bash
# Wheels that comfyserve needs and the nvidia-h200 device image lacks (it has Python 3.12 with
# torch, numpy, safetensors, transformers, huggingface-hub, aiohttp, scipy, pyyaml, psutil, but
# no diffusers, pydantic or torchsde; comfyui-frontend-package is optional: the server then
# serves its own page). Run HERE, where pip reaches the registry; the device reaches nothing.
# They land in .cache/wheels/ (git-ignored), which the device run names in `carry`
# (bench/results/README.md, "Stable Diffusion txt2img (GPU)").
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/wheels
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" \
    diffusers==0.42.1 importlib_metadata==10.2.0 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing_extensions==4.16.0 torchsde==0.2.6 trampoline==0.1.2
ls -l "$dest"
du -sh "$dest"
