#!/usr/bin/env bash
# Builds the loader fuzzer with clang's libFuzzer + ASan + UBSan (Debian: clang-14,
# libclang-rt-14-dev) and runs it for SECONDS (default 600) on a copy of the seed corpus.
#   cpp/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${CXX:-clang++-14}
OUT=${FUZZ_OUT:-build/fuzz}
mkdir -p "$OUT/corpus" "$OUT/artifacts"
cp -n cpp/fuzz/corpus/* "$OUT/corpus/" 2>/dev/null || true
# The whole core with the portable GEMM and no OpenMP: sanitizers see every instruction.
$CXX -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wno-unknown-pragmas -Icpp/include -Icpp/src \
  -DDATACREDIT_FIXTURES="\"$PWD/tests/fixtures/v0.1.0\"" \
  cpp/fuzz/fuzz_load.cpp cpp/src/*.cpp -o "$OUT/fuzz_load"
"$OUT/fuzz_load" "$OUT/corpus" -max_total_time="${1:-600}" -max_len=16384 -rss_limit_mb=2048 \
  -timeout=10 -artifact_prefix="$OUT/artifacts/" -print_final_stats=1
