#!/usr/bin/env bash
# Sets the project up from nothing: a virtualenv with pinned packages, and the pinned
# Apache Kafka jars from Maven Central, and Postfix's smtp-sink for the benchmarks. Safe to
# run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required ($2)" >&2; exit 1; }; }
PYTHON=${PYTHON:-python3.11}
need "$PYTHON" "Python 3.11"
need java "Java 17"
need mvn "Apache Maven, to fetch the Kafka jars"

java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ "${java_major:-0}" -lt 17 ]; then echo "setup: Java 17 or newer is required (found ${java_major:-none})" >&2; exit 1; fi

# System tools the tests drive as a user would: kcat (a generic Kafka client), Prometheus
# (the `prometheus` server and `promtool`, for the alert-rule and scrape tests), and
# headless Chromium with a serif font that covers Vietnamese (the printable report's test).
missing_debs=""
command -v kcat >/dev/null 2>&1 || missing_debs="$missing_debs kcat"
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } \
  || missing_debs="$missing_debs prometheus"
command -v chromium >/dev/null 2>&1 || missing_debs="$missing_debs chromium fonts-dejavu-core"
if [ -n "$missing_debs" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages:$missing_debs"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_debs >/dev/null
  else
    echo "setup: please install these Debian packages (tests need them):$missing_debs" >&2
  fi
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing pinned Python packages"
  .venv/bin/python -m pip install -q --upgrade pip==23.2.1 >/dev/null
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  touch "$stamp"
fi

libs=.cache/kafka/libs
if [ ! -f .cache/kafka/.resolved ] || [ deploy/local/kafka/pom.xml -nt .cache/kafka/.resolved ]; then
  echo "setup: resolving Apache Kafka jars from Maven Central"
  rm -rf "$libs"
  mvn -q -B -f deploy/local/kafka/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$PWD/$libs" -DincludeScope=runtime
  touch .cache/kafka/.resolved
fi
# Postfix's smtp-sink, a C SMTP server that discards what it gets: the benchmarks' sink
# (the aiosmtpd sink cannot take the 1,000 msg/s they measure). Taken from the Debian
# package without installing Postfix; optional, the benchmarks fall back to aiosmtpd.
sink=.cache/postfix
if [ ! -x "$sink/sbin/smtp-sink" ]; then
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    echo "setup: fetching Postfix's smtp-sink (Debian package postfix, not installed)"
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -qq postfix >/dev/null 2>&1) \
        && dpkg-deb -x "$tmp"/postfix_*.deb "$tmp/root"; then
      mkdir -p "$sink/sbin" "$sink/lib"
      cp "$tmp/root/usr/lib/postfix/"*.so "$sink/lib/"
      cp "$tmp/root/usr/sbin/smtp-sink" "$sink/sbin/"
      basename "$tmp"/postfix_*.deb > "$sink/VERSION"
      if LD_LIBRARY_PATH="$sink/lib" ldd "$sink/sbin/smtp-sink" | grep -q "not found"; then
        echo "setup: smtp-sink lacks system libraries; benchmarks will use the aiosmtpd sink" >&2
        rm -rf "$sink"
      fi
    else
      echo "setup: could not fetch postfix with apt-get; benchmarks will use the aiosmtpd sink" >&2
    fi
    rm -rf "$tmp"
  else
    echo "setup: no apt-get/dpkg-deb for Postfix's smtp-sink; benchmarks will use the aiosmtpd sink" >&2
  fi
fi
echo "setup: ready"
