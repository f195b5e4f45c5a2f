#!/usr/bin/env bash
# Installs what the tests need and is not already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# Web pages are tested in headless Chromium over WebDriver.
{ command -v chromium && command -v chromedriver; } >/dev/null || need_apt+=(chromium chromium-driver fonts-dejavu-core)
# Certificates are tested against Pebble, the ACME test server.
[ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ] || need_apt+=(pebble)
# DNS-01 by RFC 2136 dynamic updates is tested against Knot (its default config listens nowhere).
command -v knotd >/dev/null || need_apt+=(knot)
# Calls (XEP-0215) are tested against coturn, started by the test on loopback with its own config.
{ command -v turnserver && command -v turnutils_uclient; } >/dev/null || need_apt+=(coturn)
# SSH keys for the admin pages' SSH test (web_ssh) and the image boot test are made with ssh-keygen.
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
# The benchmark's smoke run makes a trixie chroot with mmdebstrap for Prosody and ejabberd (bench/README.md).
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
# Federation is tested against Debian's Prosody and ejabberd in a network namespace (ip from iproute2).
{ [ -x /usr/bin/prosody ] && [ -x /usr/sbin/ejabberdctl ] && command -v ip; } >/dev/null || need_apt+=(prosody ejabberd iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: please install as root: apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  # Debian's coturn package starts a TURN server on every interface where systemd runs; the tests
  # start their own on loopback, so the package's stays off.
  if printf '%s\n' "${need_apt[@]}" | grep -qx coturn && [ -d /run/systemd/system ]; then
    systemctl disable --now coturn.service >/dev/null 2>&1 || true
  fi
fi

# slixmpp, the XMPP client the tests drive, in a venv under target/ (never the system Python).
# The venv remembers the requirements it was made from, so a new pin (slixmpp-omemo, say) reaches an old venv.
venv=target/venv
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/requirements.txt "$venv/requirements.installed"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$venv/requirements.installed"
fi
