#!/usr/bin/env bash
# Make sure the command-line tools the test suite calls are installed; install the missing ones
# from Debian packages. Idempotent: when all are present it is one `command -v` each.
#   promtool  (prometheus)  tests/test_alerts.py checks deploy/prometheus rules and alerts
#   prometheus (prometheus) tests/test_alerts_prometheus.py runs a real server on the rules
#   wrk       (wrk)         tests/test_bench_smoke.py runs `bench/bench.py --quick`
# Installing needs root (or sudo). The packages' services are never started: `prometheus` ships
# a server, and only its promtool is wanted (a policy-rc.d refuses service starts meanwhile).
# Under CI=true a tool that is missing and cannot be installed fails the run: tests never
# silently skip. Locally it is a warning, and the tests that need the tool skip.
set -u

NEEDS=("promtool:prometheus" "prometheus:prometheus" "wrk:wrk")

fail_or_warn() {
  if [ "${CI:-}" = "true" ]; then echo "ensure-tools: $1" >&2; exit 1; fi
  echo "ensure-tools: warning: $1 (tests that need it will be skipped)" >&2
}

missing=()
for need in "${NEEDS[@]}"; do
  command -v "${need%%:*}" >/dev/null || missing+=("$need")
done
[ ${#missing[@]} -eq 0 ] && exit 0

packages=()
for need in "${missing[@]}"; do packages+=("${need#*:}"); done
echo "ensure-tools: installing ${packages[*]}"

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  as_root=(false)
fi

if [ "${as_root[0]:-}" != "false" ] && command -v apt-get >/dev/null; then
  # Refuse service starts during the install unless the machine already has a policy.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    trap '"${as_root[@]}" rm -f "$policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt=("${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}")
  if ! "${apt[@]}" >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update -q >/dev/null 2>&1
    "${apt[@]}" >/dev/null 2>&1
  fi
fi

for need in "${missing[@]}"; do
  command -v "${need%%:*}" >/dev/null ||
    fail_or_warn "${need%%:*} is not installed and could not be (apt-get install ${need#*:})"
done
exit 0
