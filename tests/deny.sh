#!/usr/bin/env bash
# cargo deny (bans, licenses, sources, advisories) fully offline. The RustSec advisories come
# from the snapshot in ../shared/advisory-db: it is copied into the folder cargo-deny reads and
# committed to a local git repository dated at the snapshot, because cargo-deny reads the
# database's age from git. Nothing is fetched at test time.
set -euo pipefail
cd "$(dirname "$0")/.."

# The snapshot lives beside the checkout (../shared); a clone made elsewhere on the same
# machine finds it at the workplace's fixed path.
snapshot=""
for candidate in "${CANOPY_ADVISORY_DB:-}" ../shared/advisory-db /work/shared/advisory-db; do
  if [ -n "$candidate" ] && [ -d "$candidate/crates" ]; then snapshot=$candidate; break; fi
done
[ -n "$snapshot" ] || { echo "advisory snapshot not found in ../shared/advisory-db or /work/shared/advisory-db (set CANOPY_ADVISORY_DB)" >&2; exit 1; }
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked --quiet cargo-deny

db=target/advisory-dbs/advisory-db-3157b0e258782691
stamp="$(sha256sum "$snapshot/SNAPSHOT" 2>/dev/null | cut -c1-16 || echo none)"
if [ ! -f "$db/.canopy-snapshot" ] || [ "$(cat "$db/.canopy-snapshot")" != "$stamp" ]; then
  rm -rf "$db" && mkdir -p "$db"
  cp -R "$snapshot"/. "$db"/
  chmod -R u+w "$db"
  date="$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' "$snapshot/SNAPSHOT" | head -n1 || true)"
  (
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="${date:-2026-01-01}T00:00:00Z" GIT_COMMITTER_DATE="${date:-2026-01-01}T00:00:00Z" \
      git -c user.name=snapshot -c user.email=snapshot@localhost commit -q -m "RustSec advisory-db snapshot"
  )
  echo "$stamp" > "$db/.canopy-snapshot"
fi

cargo fetch --quiet
cargo deny --offline check --show-stats
