#!/usr/bin/env bash
# Prints the path of an OpenTofu binary for the Terraform provider tests,
# building it from the Go module proxy when it is not cached yet.
#
#   test/tofu.sh            build if missing, print the path
#
# The cache is ${KINDLING_TOFU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kindling}
# /tofu-v1.10.6/tofu; test/terraform_test.go looks in the same place (or at
# $KINDLING_TOFU). A build takes about six minutes on two cores. Build output
# goes to stderr so that stdout holds only the path.
set -euo pipefail

version=v1.10.6
cache="${KINDLING_TOFU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kindling}/tofu-$version"
bin="$cache/tofu"

if [ -x "$bin" ] && CHECKPOINT_DISABLE=1 TF_CLI_CONFIG_FILE=/dev/null "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# A throwaway module, so that the download never touches Kindling's go.mod.
(
  cd "$work"
  go mod init kindling.invalid/tofu-build >/dev/null 2>&1
  GOFLAGS=-mod=mod go mod download -json "github.com/opentofu/opentofu@$version" >"$work/module.json"
)
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/module.json")
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "tofu.sh: go mod download gave no module directory for github.com/opentofu/opentofu@$version" >&2
  cat "$work/module.json" >&2
  exit 1
fi

# The module cache is read-only and OpenTofu's go.mod has replace
# directives (so `go install …@version` refuses): build from a copy.
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
echo "tofu.sh: building OpenTofu $version into $bin (several minutes)" >&2
start=$(date +%s)
(
  cd "$work/src"
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
    -ldflags "-X github.com/opentofu/opentofu/version.dev=no" \
    -o "$bin.tmp" ./cmd/tofu
)
mv "$bin.tmp" "$bin"
echo "tofu.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
