#!/bin/sh
# Install the Debian packages the tests and benchmarks use, when missing and when we are root.
# dovecot-imapd: a real IMAP server; chromium(-driver): browser tests; pst-utils, pff-tools:
# independent PST readers; npm: installs pst-extractor, one more (make node-deps); isync: mbsync,
# the benchmark's reference.
set -e
need=""
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need="$need dovecot-imapd"
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -x /usr/bin/chromedriver ] || need="$need chromium-driver"
command -v readpst >/dev/null 2>&1 || need="$need pst-utils"
command -v pffexport >/dev/null 2>&1 || need="$need pff-tools"
command -v npm >/dev/null 2>&1 || need="$need npm"
command -v mbsync >/dev/null 2>&1 || need="$need isync"
command -v unzip >/dev/null 2>&1 || need="$need unzip"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "Missing Debian packages:$need (run as root, or: sudo apt-get install$need)." >&2
  echo "Tests that need them are skipped." >&2
  exit 0
fi
echo "Installing Debian packages:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Dovecot's package starts a system service; the tests start their own instances instead.
apt-get install -y -qq --no-install-recommends $need >/dev/null
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now dovecot >/dev/null 2>&1 || true; fi
