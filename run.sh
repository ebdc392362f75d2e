#!/usr/bin/env bash
# One entry point that does all set-up on a fresh Debian machine, then runs
# what you asked for:
#   bash run.sh demo    a twistls TLS server and a verifying client on 127.0.0.1
#   bash run.sh test    the whole test suite (what CI runs)
#   bash run.sh bench   the benchmark against Twisted's TLS and asyncio
#   bash run.sh shell   a shell in the project's virtual environment
# Set-up: installs swig, libssl-dev, openssl and ca-certificates with apt-get
# when missing (M2Crypto builds from source), creates or reuses .venv with
# Python 3.11, and installs twistls with its test extras.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
venv="${TWISTLS_VENV:-$here/.venv}"

need_apt=()
command -v swig >/dev/null 2>&1 || need_apt+=(swig)
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[ -d /etc/ssl/certs ] && ls /etc/ssl/certs/*.pem >/dev/null 2>&1 || need_apt+=(ca-certificates)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# A Debian-packaged Python needs its headers (M2Crypto compiles against them)
# and ensurepip (for venv); pyenv and python.org builds ship both.
for cand in "${PYTHON:-}" python3.11 python3; do
  if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1; then
    inc=$("$cand" -c "import sysconfig; print(sysconfig.get_paths()['include'])" 2>/dev/null || true)
    [ -n "$inc" ] && [ -f "$inc/Python.h" ] || need_apt+=(python3-dev)
    "$cand" -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
    break
  fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "run.sh: installing ${need_apt[*]} with apt-get" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "run.sh: creating $venv" >&2
  "$py" -m venv "$venv"
fi
stamp="$venv/.twistls-installed"
want=$(cat setup.cfg setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "run.sh: installing twistls and its test extras into $venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$venv/bin/python" -m pip install -q -e ".[test,bench]"
  # Put the checkout itself on sys.path, so Twisted's plugin scan finds
  # ./twisted/plugins (an editable install alone does not expose that folder).
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$here" > "$site/twistls-checkout.pth"
  "$venv/bin/python" -c "import twistls, M2Crypto, service_identity, twisted" 
  echo "$want" > "$stamp"
fi
# Refresh Twisted's plugin cache so twistd and endpoint strings find twistls.
"$venv/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" 2>/dev/null || true
export PATH="$venv/bin:$PATH"

cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo)  exec "$venv/bin/python" -m twistls demo "$@" ;;
  test)
    # sslyze (the TLS scanner the audit tests run) pins an older cryptography
    # than twistls uses, so it lives in a venv of its own, found by the tests.
    audit="${TWISTLS_AUDIT_VENV:-$here/.venv-audit}"
    if [ ! -x "$audit/bin/python" ] || ! "$audit/bin/python" -c "import sslyze" 2>/dev/null; then
      echo "run.sh: installing sslyze into $audit for the configuration audit" >&2
      "$py" -m venv "$audit"
      "$audit/bin/python" -m pip install -q sslyze
    fi
    export TWISTLS_SSLYZE_PYTHON="$audit/bin/python"
    exec "$venv/bin/python" -m pytest -q "$@" ;;
  bench)
    # The like-for-like peer: Twisted's TLS with pyOpenSSL on the system libssl
    # (Debian's python3-openssl/python3-cryptography, compiled against it, and
    # python3-service-identity, which Twisted's client checks names with),
    # under the same interpreter as twistls.  Optional: without it the
    # benchmark skips that row.
    sysvenv="${TWISTLS_BENCH_SYSLIBSSL_VENV:-$here/.venv-syslibssl}"
    sysneeds="import OpenSSL, service_identity, twisted.protocols.tls, trustme"
    if [ ! -x "$sysvenv/bin/python" ] || ! "$sysvenv/bin/python" -c "$sysneeds" 2>/dev/null; then
      if command -v apt-get >/dev/null 2>&1 && [ -d /usr/lib/python3/dist-packages ]; then
        echo "run.sh: making $sysvenv (Twisted on the system libssl, for the like-for-like row)" >&2
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        { dpkg -s python3-openssl python3-cryptography python3-service-identity >/dev/null 2>&1 \
          || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-openssl python3-cryptography python3-service-identity >/dev/null; }; } \
          && rm -rf "$sysvenv" && "$py" -m venv "$sysvenv" \
          && echo /usr/lib/python3/dist-packages > "$("$sysvenv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/debian-libssl.pth" \
          && "$sysvenv/bin/python" -m pip install -q "twisted==$("$venv/bin/python" -c "import twisted; print(twisted.__version__)")" "trustme<1.2" \
          && "$sysvenv/bin/python" -c "$sysneeds" \
          || { echo "run.sh: could not make $sysvenv; the benchmark skips that row" >&2; rm -rf "$sysvenv"; }
      fi
    fi
    export TWISTLS_BENCH_SYSLIBSSL_PYTHON="$sysvenv/bin/python"
    exec "$venv/bin/python" bench/run.py "$@" ;;
  shell) exec "${SHELL:-bash}" ;;
  *) echo "usage: bash run.sh [demo|test|bench|shell] [args...]" >&2; exit 2 ;;
esac
