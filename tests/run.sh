#!/usr/bin/env bash
# Install everything the tests need into .venv and run them. Tests start (and stop)
# every server they use themselves, on 127.0.0.1; telemetry is off.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 AIM_UI_TELEMETRY_ENABLED=0
export CLEARML_OFFLINE_MODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The page tests drive Debian's Chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,test]" --config-settings editable_mode=compat
.venv/bin/python -m pytest -q "$@"
