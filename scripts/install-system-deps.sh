#!/usr/bin/env bash
# Installs the Debian packages the test suite starts for real, when any is missing.
# Needs root (or sudo) on a machine that has never seen the project; does nothing when all are present.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# Emoji in the web client's screenshots (test-artifacts/web) as people see them, not as empty boxes.
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
# Debian starts the services it installs; the tests start their own on free ports instead.
for service in redis-server nginx; do
  $sudo service "$service" stop >/dev/null 2>&1 || true
done
