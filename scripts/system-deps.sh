#!/bin/sh
# Install the Debian packages the tests and benchmarks use, when missing and when we are root.
# dovecot-imapd: a real IMAP server; chromium(-driver): browser tests; pst-utils, pff-tools:
# independent PST readers; npm: installs pst-extractor, one more (make node-deps); isync: mbsync,
# the benchmark's reference; unzip, libarchive-tools (bsdtar): independent ZIP extractors the
# archive tests unpack with.
#   --dry-run   print the packages that would be installed (nothing when all are there) and stop.
# Each check looks for what the tests run, not for a package's name: Dovecot needs its master
# binary (dovecot-core) *and* its IMAP service binaries (dovecot-imapd), which another IMAP
# server's package can remove while leaving dovecot-core in place.
set -e
dry_run=""
[ "$1" = "--dry-run" ] && dry_run=1
DOVECOT_LIBEXEC="${DOVECOT_LIBEXEC:-/usr/lib/dovecot}"
need=""
if ! { command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; } \
   || [ ! -x "$DOVECOT_LIBEXEC/imap" ] || [ ! -x "$DOVECOT_LIBEXEC/imap-login" ]; then
  need="$need dovecot-imapd"
fi
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -x /usr/bin/chromedriver ] || need="$need chromium-driver"
command -v readpst >/dev/null 2>&1 || need="$need pst-utils"
command -v pffexport >/dev/null 2>&1 || need="$need pff-tools"
command -v npm >/dev/null 2>&1 || need="$need npm"
command -v mbsync >/dev/null 2>&1 || need="$need isync"
command -v unzip >/dev/null 2>&1 || need="$need unzip"
command -v bsdtar >/dev/null 2>&1 || need="$need libarchive-tools"
if [ -n "$dry_run" ]; then
  [ -n "$need" ] && echo "${need# }"
  exit 0
fi
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
# --reinstall: a package can be "installed" with its files gone (replaced by another package's).
apt-get install -y -qq --no-install-recommends --reinstall $need >/dev/null
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now dovecot >/dev/null 2>&1 || true; fi
