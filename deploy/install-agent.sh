#!/usr/bin/env bash
# Installs the agent binary and unit on this host and enrolls it with a controller.
#
#   sudo INFRASTRUCTOR_JOIN_TOKEN=ifj_... ./install-agent.sh --binary ./infrastructor-agent \
#        --controller https://controller:8443 --ca-fingerprint <sha256>
#
# The join token comes from the environment (a command line is visible to every user in ps).
#
# Idempotent: re-running upgrades the binary and keeps an existing enrollment.
set -euo pipefail

binary="" controller="" fingerprint=""
token="${INFRASTRUCTOR_JOIN_TOKEN:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --controller) controller="$2"; shift 2 ;;
    --ca-fingerprint) fingerprint="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$binary" ] && [ -x "$binary" ] || { echo "--binary must name the agent executable" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)

install -m 0755 -- "$binary" /usr/local/bin/infrastructor-agent
install -d -m 0755 /etc/infrastructor
[ -f /etc/infrastructor/agent.toml ] || install -m 0644 -- "$here/agent.example.toml" /etc/infrastructor/agent.toml
install -m 0644 -- "$here/infrastructor-agent.service" /etc/systemd/system/infrastructor-agent.service
install -d -m 0700 /var/lib/infrastructor-agent

if [ ! -f /var/lib/infrastructor-agent/identity/identity.toml ]; then
  [ -n "$controller" ] && [ -n "$token" ] && [ -n "$fingerprint" ] || {
    echo "not enrolled yet: pass --controller and --ca-fingerprint, and INFRASTRUCTOR_JOIN_TOKEN in the environment" >&2; exit 2; }
  INFRASTRUCTOR_JOIN_TOKEN="$token" /usr/local/bin/infrastructor-agent enroll \
    --state-dir /var/lib/infrastructor-agent --controller "$controller" --ca-fingerprint "$fingerprint"
fi

systemctl daemon-reload
systemctl enable --now infrastructor-agent.service
systemctl --no-pager --lines=5 status infrastructor-agent.service
