#!/usr/bin/env bash
# Runs passerelle-signal's criterion benchmarks and the libsignal-client
# benchmark (tests/interop/node/bench.mjs) one after the other, then prints
# the time per operation of both and their ratio (ours / libsignal: below 1
# means passerelle-signal is faster).
#
#   npm ci --prefix crates/signal/tests/interop/node   # once
#   crates/signal/benches/compare.sh [--quick] [--spqr] [--libsignal VERSION] [name filter]
#
# --quick shortens warm-up and measurement (1 s / 2 s for criterion, 0.5 s /
# 1 s for Node) for a smoke run; figures worth quoting need the defaults.
# passerelle-signal's sessions always run SPQR v1 beside the Double Ratchet.
# --libsignal picks the pinned libsignal-client to time (default 0.90.0; see
# bench.mjs). 0.103.0 requires SPQR, so it runs the same triple ratchet.
# 0.90.0 has its SPQR state stripped once the handshake is done, unless
# --spqr keeps it: only with 0.103.0 or --spqr are the steady-state rows the
# same protocol on both sides.
# The filter is a substring of the operation names, e.g. `session/` or
# `decrypt`. Criterion's estimates are read from
# $CARGO_TARGET_DIR/criterion (cargo metadata's target directory).

set -euo pipefail

crate_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_dir="$crate_dir/tests/interop/node"

criterion_args=()
node_args=()
filter=""
while (($#)); do
  case "$1" in
    --quick)
      criterion_args+=(--warm-up-time 1 --measurement-time 2)
      node_args+=(--quick)
      ;;
    --spqr) node_args+=(--spqr) ;;
    --libsignal)
      if (($# < 2)); then
        echo "compare.sh: --libsignal needs a version" >&2
        exit 2
      fi
      node_args+=(--libsignal "$2")
      shift
      ;;
    -h | --help)
      sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    -*)
      echo "compare.sh: unknown option $1" >&2
      exit 2
      ;;
    *) filter="$1" ;;
  esac
  shift
done

if [[ ! -d "$node_dir/node_modules/@signalapp/libsignal-client" ]]; then
  echo "compare.sh: run 'npm ci --prefix ${node_dir#"$PWD"/}' first" >&2
  exit 1
fi

target_dir="$(cd "$crate_dir" && cargo metadata --format-version 1 --no-deps |
  node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')"
node_json="$(mktemp "${TMPDIR:-/tmp}/libsignal-bench.XXXXXX.json")"
trap 'rm -f "$node_json"' EXIT

echo "== machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p'), load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== passerelle-signal (criterion, bench profile)"
(cd "$crate_dir" && cargo bench -p passerelle-signal --bench session --bench sender_keys -- \
  "${criterion_args[@]}" ${filter:+"$filter"})

echo "== libsignal-client (node)"
node "$node_dir/bench.mjs" "${node_args[@]}" --json "$node_json" ${filter:+"$filter"}

echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
node - "$target_dir/criterion" "$node_json" <<'EOF'
const { existsSync, readFileSync } = require('node:fs');
const path = require('node:path');
const [criterionDir, nodeJson] = process.argv.slice(2);
const theirs = JSON.parse(readFileSync(nodeJson, 'utf8'));
const fmt = (ns) =>
  ns >= 1e6 ? `${(ns / 1e6).toFixed(3)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`;
const rows = [];
for (const [name, r] of Object.entries(theirs.results)) {
  const file = path.join(criterionDir, ...name.split('/'), 'new', 'estimates.json');
  if (!existsSync(file)) continue;
  const ours = JSON.parse(readFileSync(file, 'utf8')).mean.point_estimate;
  rows.push([name, fmt(ours), fmt(r.meanNs), (ours / r.meanNs).toFixed(2)]);
}
const head = ['operation', 'passerelle-signal', `libsignal-client ${theirs.version}`, 'ratio'];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells) => `| ${cells.map((c, i) => (i ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')} |`;
console.log(line(head));
console.log(`|${widths.map((w, i) => (i ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`);
for (const row of rows) console.log(line(row));
console.log('\nmean time per operation; ratio = passerelle-signal / libsignal-client (below 1: faster)');
EOF
