#!/usr/bin/env bash
# Installs the system packages the test suite drives for real, if they are missing:
# Java (Spark's executors), Chromium (the browser tests), Node.js (the front-end's unit
# tests) and the Kerberos headers (sparkmagic's dependencies build against them).
# Needs root (apt-get); prints what it installs on stderr.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
[ -x "${MAGGY_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# sparkmagic's Kerberos dependencies (gssapi, krb5) compile against it
dpkg -s libkrb5-dev >/dev/null 2>&1 || need+=(libkrb5-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing system packages: ${need[*]} (install them with apt-get as root)" >&2
        exit 1
    fi
    echo "installing system packages: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need[@]}" >&2
fi
