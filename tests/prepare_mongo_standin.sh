#!/usr/bin/env bash
# The MongoDB stand-in of the store contract tests (tests/mongo_standin.py):
# mongoeco's wire-protocol server in its own virtual environment,
# .venv/mongoeco, because mongoeco needs Python 3.13 (pyenv's, when there is
# one). Without it those tests are skipped. Safe to run again: it returns at
# once when the environment is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.11.0
VENV=.venv/mongoeco

ready() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "
import importlib.metadata as metadata, sys
try:
    sys.exit(metadata.version('mongoeco') != '$VERSION' or not metadata.version('pymongo'))
except metadata.PackageNotFoundError:
    sys.exit(1)
" 2>/dev/null
}

if ready; then
  exit 0
fi

PY313=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n 1 || true)
PY313=${PY313:-$(command -v python3.13 || true)}
if [ -z "$PY313" ]; then
  # Not a failure: the rest of the suite runs, and the skipped tests say why.
  echo "prepare_mongo_standin: no Python 3.13 (pyenv install 3.13, or apt-get install" \
    "python3.13); without it the MongoDB contract tests are skipped" >&2
  exit 0
fi
"$PY313" -m venv "$VENV"
"$VENV/bin/pip" install -q "mongoeco[wire]==$VERSION"
ready || { echo "prepare_mongo_standin: $VENV has no mongoeco $VERSION after install" >&2; exit 1; }
