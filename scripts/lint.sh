#!/usr/bin/env bash
# Enforces .clang-format on every C++ file of the project and .clang-tidy (warnings are errors)
# on the library and binary sources. Needs a configured build dir (compile_commands.json);
# default ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

mapfile -t all < <(git ls-files '*.cc' '*.h' '*.c')
mapfile -t tidy < <(git ls-files 'userspace/*.cc' 'init/*.cc' 'cni/*.cc')

echo "lint: clang-format on ${#all[@]} files"
clang-format --dry-run --Werror "${all[@]}"

echo "lint: clang-tidy on ${#tidy[@]} files ($(nproc) at a time)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
printf '%s\n' "${tidy[@]}" | xargs -P "$(nproc)" -n 2 clang-tidy -p "$build" --quiet >"$log" 2>&1 \
  || status=$?
grep -E '(warning|error):' "$log" || true
if ((status != 0)); then
  echo "lint: clang-tidy found problems (exit $status)" >&2
  exit 1
fi
echo "lint: ok"
