#!/usr/bin/env bash
# The whole test suite: formatting, lints, the FreeBSD type-check, then every test.
# Works on a fresh Debian machine with Rust: it adds the rustup pieces and the Debian
# packages it needs (tests/deps.sh), and runs every test binary even when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh

for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
rustup target list --installed | grep -qx x86_64-unknown-freebsd || rustup target add x86_64-unknown-freebsd

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo check --target x86_64-unknown-freebsd"
cargo check --target x86_64-unknown-freebsd
echo "== cargo clippy --target x86_64-unknown-freebsd -- -D warnings"
cargo clippy --target x86_64-unknown-freebsd -- -D warnings
echo "== cargo test --all-targets --no-fail-fast"
cargo test --all-targets --no-fail-fast
