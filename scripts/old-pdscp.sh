#!/usr/bin/env bash
# old-pdscp.sh - builds pdscp 0.1.0 (commit 4eb3ff1, the last with layout 1
# state) for the upgrade tests, and prints the path of its binary. Built once
# into target/old/ from `git archive` of this repository (so it needs the
# git history, as any clone has), with the same Cargo.lock pins.
#
# Usage: scripts/old-pdscp.sh [REV]   (default 4eb3ff1)
set -euo pipefail
cd "$(dirname "$0")/.."

rev=${1:-4eb3ff1}
dir=target/old/$rev
bin=$dir/bin/pdscp
if [[ -x $bin ]]; then
    echo "$PWD/$bin"
    exit 0
fi
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
    echo "old-pdscp: commit $rev is not in this repository's history (a shallow clone?)" >&2
    exit 1
fi
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp/src"
git archive "$rev" | tar -x -C "$dir.tmp/src"
echo "old-pdscp: building pdscp at $rev" >&2
cargo build --locked --quiet --manifest-path "$dir.tmp/src/Cargo.toml" \
    --target-dir "$PWD/target/old/build" --bin pdscp >&2
mkdir -p "$dir.tmp/bin"
cp "target/old/build/debug/pdscp" "$dir.tmp/bin/pdscp"
rm -rf "$dir.tmp/src" "$dir"
mv "$dir.tmp" "$dir"
echo "$PWD/$bin"
