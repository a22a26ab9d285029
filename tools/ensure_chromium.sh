#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the browser tests (tests/site): `make browser` runs this.
# The tests drive /usr/bin/chromium with playwright (never a browser playwright downloads itself).
#   - present: print its version;
#   - missing, and root (or passwordless sudo) with apt-get: install the `chromium` package;
#   - missing otherwise: say so in one line and exit 0, so the browser tests skip with the same reason;
#   - in CI (CI=true) the browser tests must run: exit 1 if chromium cannot be installed.
set -euo pipefail

CHROMIUM=${NORMBOOK_CHROMIUM:-/usr/bin/chromium}

version() { "$CHROMIUM" --version 2>/dev/null || true; }

if [ -x "$CHROMIUM" ]; then
    echo "ensure_chromium: $(version) at $CHROMIUM"
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    sudo=(none)
fi

if [ "${sudo[0]:-}" != none ] && command -v apt-get >/dev/null; then
    echo "ensure_chromium: installing Debian's chromium with apt-get"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

if [ -x "$CHROMIUM" ]; then
    echo "ensure_chromium: $(version) at $CHROMIUM"
elif [ "${CI:-}" = true ]; then
    echo "ensure_chromium: no chromium at $CHROMIUM and it could not be installed (CI=true: the browser tests must run)" >&2
    exit 1
else
    echo "ensure_chromium: no chromium at $CHROMIUM (needs root and apt-get: apt-get install chromium); the browser tests will skip"
fi
