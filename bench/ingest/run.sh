#!/usr/bin/env bash
# Installs the load tools when missing, then runs the ingest benchmark.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package) ..."
  apt-get install -y -q wrk >/dev/null
fi
exec .venv/bin/python bench/ingest/bench_ingest.py "$@"
