#!/usr/bin/env bash
# One command to set up a fresh machine (Python >= 3.10 and pip): a virtual environment in
# .venv with alexspec (editable), torch + triton, the trainer's and the tests' packages, at the versions in
# constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "installing alexspec with torch, triton and the test tools (a few minutes the first time)"
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[torch,train,interop,test]'
.venv/bin/python -c "import torch, triton, alexspec; print(f'ready: alexspec {alexspec.__version__}, torch {torch.__version__}, triton {triton.__version__}')"
echo "activate with: source .venv/bin/activate"
