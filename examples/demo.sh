#!/usr/bin/env bash
# The demo: set up a venv, run a 4-job sweep of the digits experiment tracked into
# ./experiments.db, then show it with the `experiments` command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ".[examples]"
.venv/bin/python examples/train_digits.py -m model.lr=0.01,0.1 model.hidden=32,64
.venv/bin/experiments list --sweep latest
.venv/bin/experiments compare --sweep latest --sort val_acc --desc
