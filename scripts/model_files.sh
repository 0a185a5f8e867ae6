#!/bin/sh
# azd's prepackage hook (azure.yaml): the model files of pipeline/vision/local/models/ must be in the
# package, and a clone has none until they are made (they are generated and gitignored).
#
# A machine that deploys needs no test tools, no root and no browser: this makes a virtual
# environment (.venv, as set-up does) with the app's own requirements.txt when there is none,
# then runs local/model_files.py, which keeps every model file that is present and intact (a
# no-op that reads a few files) and makes only what is missing, with only what that file needs.
# POSIX sh: azd runs posix hooks with `sh` (Linux, macOS, CI runners).
set -eu
cd "$(dirname "$0")/.."

log() { printf '[model_files] %s\n' "$*" >&2; }

py=.venv/bin/python
if [ ! -x "$py" ]; then
  python=${PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 || {
    log "no $python: install Python 3.11 (the app's runtime), or set PYTHON to one"
    exit 1
  }
  log "creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv || {
    log "$python -m venv failed (Debian/Ubuntu: the python3-venv package)"
    exit 1
  }
fi
# The app's run-time packages (what the makers import); the same stamp file set-up writes counts.
want=$(cat requirements.txt | (sha256sum 2>/dev/null || shasum -a 256) | cut -d' ' -f1)
stamp=.venv/.darkroom-runtime-requirements
if [ ! -f .venv/.darkroom-requirements ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -r requirements.txt"
  "$py" -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
exec "$py" -m local.model_files
