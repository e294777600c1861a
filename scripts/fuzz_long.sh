#!/usr/bin/env bash
# Long fuzzing run: 2,000 examples per property instead of 100 (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m pytest -q -p no:cacheprovider tests/test_fuzz.py \
    --hypothesis-profile=long --hypothesis-show-statistics "$@"
