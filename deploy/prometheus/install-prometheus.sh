#!/usr/bin/env bash
# Prometheus and promtool from Debian's package, for the rule tests and the scrape
# test (`make test`); nothing to do when both are on the PATH already.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "prometheus/promtool missing: run 'sudo apt-get install prometheus' (Debian's package)" >&2
  exit 1
fi
echo "installing Debian's prometheus package (prometheus, promtool) ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
# The package may start a system service; the tests run their own servers.
if command -v service >/dev/null; then service prometheus stop >/dev/null 2>&1 || true; fi
command -v promtool >/dev/null
