#!/usr/bin/env bash
# Install Debian packages quietly (root); refresh the package lists only when the install fails.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
