#!/usr/bin/env bash
# Times ignite applying a typical config to a 1 GiB loop disk: GPT with one
# root partition, ext4, 20 files, 2 users, 3 units (one enabled), N runs.
#   bash bench/agent/run.sh [RUNS]        (root; needs sgdisk, mkfs.ext4)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices)" >&2; exit 1; }
work=$(mktemp -d)
loop=""
cleanup() { [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$work/ignite" ./cmd/ignite
truncate -s 1G "$work/disk.img"
loop=$(losetup --find --show --partscan "$work/disk.img")

files=""
for i in $(seq 1 20); do
  files="$files{\"path\":\"/etc/bench/file$i.conf\",\"mode\":420,\"contents\":{\"source\":\"data:,setting%3D$i%0A\"}},"
done
cat > "$work/config.ign" <<J
{"ignition":{"version":"3.4.0"},
 "storage":{
  "disks":[{"device":"$loop","wipeTable":true,"partitions":[{"number":1,"label":"root","sizeMiB":0}]}],
  "filesystems":[{"device":"/dev/disk/by-partlabel/root","format":"ext4","label":"root","wipeFilesystem":true,"path":"/"}],
  "files":[${files%,}]},
 "passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench core"]},{"name":"ops","groups":["ops"]}],"groups":[{"name":"ops"}]},
 "systemd":{"units":[
  {"name":"a.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"},
  {"name":"b.service","contents":"[Service]\nExecStart=/bin/true\n"},
  {"name":"c.timer","contents":"[Timer]\nOnCalendar=daily\n"}]}}
J
echo "ignite run: partition + ext4 + 20 files + 2 users + 3 units on a 1 GiB loop disk ($loop)"
for r in $(seq 1 "$runs"); do
  root="$work/root$r"; mkdir -p "$root"
  start=$(date +%s%N)
  "$work/ignite" run -firstboot -force -config "$work/config.ign" -root "$root" -log-level warn >"$work/out$r" 2>&1 || { cat "$work/out$r"; exit 1; }
  end=$(date +%s%N)
  stages=$(sed -n 's/^KINDLING-REPORT //p' "$work/out$r" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join("%s=%dms" % (s["name"], s["duration_ms"]) for s in r["stages"]))')
  echo "run $r: $(( (end - start) / 1000000 )) ms  ($stages)"
done
