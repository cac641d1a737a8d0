package test

// Full boots, power-on to provisioned: a QEMU VM with an empty disk
// network-boots through Kindling's DHCP, TFTP and HTTP (pxeLab), runs
// Debian's kernel with Kindling's initramfs (ignite as /init), and the
// agent partitions, formats and configures the disk (or installs a Debian
// image onto it), reports to the server and powers off or reboots. The
// tests then read the disk image and the server's report.
//
// Needs root, qemu-system-x86_64 (TCG), a readable /boot/vmlinuz-VERSION
// with /lib/modules/VERSION, iPXE and OVMF (Debian packages
// qemu-system-x86, ipxe, ipxe-qemu, ovmf, linux-image-amd64, gdisk,
// e2fsprogs, util-linux, dnsmasq-base); the install flow also builds a
// Debian image with examples/debian-install/build-image.sh (debootstrap,
// dosfstools, mtools, zerofree, zstd, and a Debian mirror), cached in
// $KINDLING_TEST_IMAGE_DIR, else ${KINDLING_TEST_CACHE:-~/.cache/kindling}/debian-image.

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox/events"
)

// bootKernel finds a kernel with its modules: KINDLING_TEST_KERNEL (a
// vmlinuz named vmlinuz-VERSION), else the newest readable
// /boot/vmlinuz-VERSION that has /lib/modules/VERSION/modules.dep.
func bootKernel(t *testing.T) (vmlinuz, version string) {
	t.Helper()
	cands := []string{os.Getenv("KINDLING_TEST_KERNEL")}
	if cands[0] == "" {
		cands, _ = filepath.Glob("/boot/vmlinuz-*")
		sort.Sort(sort.Reverse(sort.StringSlice(cands)))
	}
	for _, k := range cands {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err != nil {
			continue
		}
		if f, err := os.Open(k); err == nil {
			f.Close()
			return k, v
		}
	}
	t.Skip("no readable /boot/vmlinuz-VERSION with /lib/modules/VERSION/modules.dep (Debian package linux-image-amd64; .ci/run installs it)")
	return "", ""
}

// needBoot skips the test when it cannot boot a VM and inspect its disk.
func needBoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under TCG (10-50 s)")
	}
	need(t, "ip", "qemu-system-x86_64", "sgdisk", "blkid", "e2fsck", "mount", "umount")
}

// bootLab is a pxeLab whose data directory boots the Debian kernel with
// Kindling's initramfs: profile "e2e" with the given kernel arguments
// (after the common ones) and Ignition config, for pxeMAC.
type bootLab struct {
	*pxeLab
	data string
}

// newBootLab builds the initramfs, writes the data directory and starts
// the server. args are the profile's extra kernel arguments (they may
// use the server's templates, e.g. {{.request.host}}); files are more
// data-directory files (the Ignition config must be ignition/e2e.yaml).
func newBootLab(t *testing.T, args []string, files map[string]string) *bootLab {
	t.Helper()
	needBoot(t)
	vmlinuz, kver := bootKernel(t)
	kindling := buildKindling(t)
	ignite := buildIgnite(t)

	kargs := append([]string{
		"initrd=initrd.img", "console=ttyS0", "panic=1",
		"BOOTIF=01-${mac:hexhyp}",
		"ignition.firstboot",
		"ignition.config.url=http://{{.request.host}}/ignition?mac=${mac:hexhyp}",
		"kindling.report.url=http://{{.request.host}}/report?mac=${mac:hexhyp}",
		"kindling.finish.failure=poweroff",
	}, args...)
	profile, err := json.Marshal(map[string]any{
		"id": "e2e",
		"boot": map[string]any{
			"kernel": "/assets/vmlinuz",
			"initrd": []string{"--name initrd.img /assets/initrd.img"},
			"args":   kargs,
		},
		"ignition_id": "e2e.yaml",
	})
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]string{
		"profiles/e2e.json": string(profile),
		"groups/vm.json":    `{"id": "vm", "profile": "e2e", "selector": {"mac": "` + pxeMAC + `"}}`,
	}
	for k, v := range files {
		data[k] = v
	}
	l := &bootLab{pxeLab: newPXELab(t, "server", data)}
	l.data = filepath.Join(l.dir, "data")

	// The server opens assets per request: the big ones can come now.
	initrd := filepath.Join(l.dir, "initrd.img")
	start := time.Now()
	out, err := exec.Command(kindling, "initramfs", "build", "-o", initrd, "-ignite", ignite, "-kernel-version", kver).CombinedOutput()
	if err != nil {
		t.Fatalf("kindling initramfs build -o %s -ignite %s -kernel-version %s: %v\n%s", initrd, ignite, kver, err, out)
	}
	t.Logf("initramfs for %s built in %s", kver, time.Since(start).Round(time.Millisecond))
	l.asset("vmlinuz", vmlinuz)
	l.asset("initrd.img", initrd)
	return l
}

// asset puts the file src into the data directory's assets as name: a
// hard link when it can, else a copy.
func (l *bootLab) asset(name, src string) {
	l.t.Helper()
	dst := filepath.Join(l.data, "assets", name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if os.Link(src, dst) == nil {
		return
	}
	in, err := os.Open(src)
	if err != nil {
		l.t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		l.t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
	if err := out.Close(); err != nil {
		l.t.Fatal(err)
	}
}

// vmOptions describe a test VM.
type vmOptions struct {
	// UEFI boots OVMF (q35) with its own PXE client; false boots SeaBIOS
	// (pc) with the NIC's iPXE ROM.
	UEFI bool
	// DiskMiB is the size of the empty raw virtio disk.
	DiskMiB int64
	// MemoryMiB is the VM's memory; 0 means 512.
	MemoryMiB int
	// Reboot lets the guest reboot: it network-boots once, then boots its
	// disk (BIOS only). False ends QEMU on the first reboot or panic
	// (-no-reboot).
	Reboot bool
}

// bootVM is a running QEMU.
type bootVM struct {
	l     *bootLab
	cmd   *exec.Cmd
	disk  string
	start time.Time
	done  chan struct{}
	err   error // QEMU's exit, once done is closed
}

func (l *bootLab) startVM(o vmOptions) *bootVM {
	l.t.Helper()
	disk := filepath.Join(l.dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := f.Truncate(o.DiskMiB << 20); err != nil {
		l.t.Fatal(err)
	}
	f.Close()
	mem := o.MemoryMiB
	if mem == 0 {
		mem = 512
	}
	args := []string{"-m", fmt.Sprint(mem), "-smp", "1", "-display", "none", "-monitor", "none", "-accel", "tcg",
		"-serial", "file:" + filepath.Join(l.dir, "serial.log"),
		"-netdev", "tap,id=n0,ifname=" + l.tap + ",script=no,downscript=no",
		// TCG has no RDRAND: without a virtio RNG the kernel's random
		// number generator is not seeded and the agent's DHCP waits.
		"-device", "virtio-rng-pci",
		"-drive", "file=" + disk + ",format=raw,if=virtio,cache=unsafe"}
	if !o.Reboot {
		args = append(args, "-no-reboot")
	}
	if o.UEFI {
		code := "/usr/share/OVMF/OVMF_CODE_4M.fd"
		vars, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
		if err != nil {
			l.t.Skipf("OVMF: %v (Debian package ovmf; .ci/run installs it)", err)
		}
		if _, err := os.Stat(code); err != nil {
			l.t.Skipf("OVMF: %v (Debian package ovmf; .ci/run installs it)", err)
		}
		varsFile := filepath.Join(l.dir, "vars.fd")
		if err := os.WriteFile(varsFile, vars, 0o644); err != nil {
			l.t.Fatal(err)
		}
		// romfile= leaves the NIC to OVMF's own PXE client, which loads
		// iPXE over Kindling's TFTP.
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,file="+varsFile,
			"-device", "virtio-net-pci,netdev=n0,mac="+pxeMAC+",romfile=,bootindex=1")
	} else {
		args = append(args, "-machine", "pc,graphics=off",
			"-device", "virtio-net-pci,netdev=n0,mac="+pxeMAC)
		if o.Reboot {
			// The network once (the installer), then the disk.
			args = append(args, "-boot", "order=c,once=n")
		} else {
			args = append(args, "-boot", "order=n")
		}
	}
	v := &bootVM{l: l, disk: disk, done: make(chan struct{})}
	v.start = time.Now()
	v.cmd = l.start("qemu-system-x86_64", args...)
	go func() {
		v.err = v.cmd.Wait()
		close(v.done)
	}()
	// Before the lab's cleanup, which would wait for QEMU a second time.
	l.t.Cleanup(v.stop)
	return v
}

// exited reports whether QEMU has ended.
func (v *bootVM) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// waitExit waits for QEMU to end by itself.
func (v *bootVM) waitExit(timeout time.Duration) {
	v.l.t.Helper()
	select {
	case <-v.done:
		if v.err != nil {
			v.l.t.Errorf("qemu-system-x86_64 = %v, want exit 0\n%s", v.err, v.l.tail("qemu-system-x86_64.log"))
		}
	case <-time.After(timeout):
		v.stop()
		v.l.t.Fatalf("the VM did not power off within %v of the report\n%s", timeout, v.l.tail("serial.log"))
	}
}

// stop kills QEMU (if it still runs) and waits for it.
func (v *bootVM) stop() {
	v.cmd.Process.Kill()
	<-v.done
}

// serverReport is GET /report?mac=…: the server's record around the
// agent's report.
type serverReport struct {
	MAC      string    `json:"mac"`
	Received time.Time `json:"received"`
	Result   string    `json:"result"`
	Stage    string    `json:"stage"`
	Error    string    `json:"error"`
	Report   struct {
		Result     string `json:"result"`
		Stage      string `json:"stage"`
		Operation  string `json:"operation"`
		Error      string `json:"error"`
		DurationMS int64  `json:"duration_ms"`
		Agent      string `json:"agent"`
		Stages     []struct {
			Name   string `json:"name"`
			Result string `json:"result"`
		} `json:"stages"`
		Install *struct {
			Device string `json:"device"`
			Image  string `json:"image"`
			Bytes  int64  `json:"bytes"`
			Root   string `json:"root"`
		} `json:"install"`
	} `json:"report"`
}

func (r serverReport) stageNames() []string {
	var out []string
	for _, s := range r.Report.Stages {
		out = append(out, s.Name+":"+s.Result)
	}
	return out
}

// waitReport polls GET /report?mac= until the agent has reported, and
// returns the report and the time from VM start to its arrival (as the
// server recorded it).
func (v *bootVM) waitReport(timeout time.Duration) (serverReport, time.Duration) {
	v.l.t.Helper()
	var rep serverReport
	took, ok := v.poll(timeout, func() bool {
		b, err := v.l.curl("/report?mac=" + pxeMAC)
		return err == nil && json.Unmarshal(b, &rep) == nil && rep.Result != ""
	})
	if !ok {
		v.stop()
		v.l.t.Fatalf("no report from the agent within %v of VM start (VM exited: %v)\nevents: %v\n%s\n%s",
			timeout, v.exited(), steps(v.events()), v.l.tail("serial.log"), v.l.tail("kindling.log"))
	}
	if !rep.Received.IsZero() {
		took = rep.Received.Sub(v.start)
	}
	return rep, took
}

// poll calls check every 250 ms until it is true or timeout passes since
// the VM started; it stops early, after a last check, when QEMU exits.
func (v *bootVM) poll(timeout time.Duration, check func() bool) (time.Duration, bool) {
	for {
		if check() {
			return time.Since(v.start), true
		}
		if v.exited() || time.Since(v.start) > timeout {
			return time.Since(v.start), check()
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (v *bootVM) events() []events.Event {
	var evs []events.Event
	if b, err := v.l.curl("/events?mac=" + pxeMAC); err == nil {
		json.Unmarshal(b, &evs)
	}
	return evs
}

// milestones says when (seconds after VM start) each boot step first
// happened, for the log.
func (v *bootVM) milestones(evs []events.Event) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, e := range evs {
		s := e.Source + ":" + e.Step
		if e.Step == "asset" || e.Source == "tftp" {
			s += ":" + filepath.Base(e.File)
		}
		if seen[s] {
			continue
		}
		seen[s] = true
		fmt.Fprintf(&b, " %s@%.1fs", s, e.Time.Sub(v.start).Seconds())
	}
	return strings.TrimSpace(b.String())
}

// serial is the VM's console output so far.
func (v *bootVM) serial() string {
	b, _ := os.ReadFile(filepath.Join(v.l.dir, "serial.log"))
	return string(b)
}

// gptPartition is what sgdisk -i says of one partition of a disk image.
type gptPartition struct {
	Name, TypeGUID    string
	First, Last, Size int64 // sectors
}

func readPartition(t *testing.T, disk string, n int) gptPartition {
	t.Helper()
	out, err := exec.Command("sgdisk", "-i", fmt.Sprint(n), disk).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -i %d %s: %v\n%s", n, disk, err, out)
	}
	var p gptPartition
	for _, line := range strings.Split(string(out), "\n") {
		k, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch k {
		case "Partition GUID code":
			p.TypeGUID, _, _ = strings.Cut(val, " ")
		case "Partition name":
			p.Name = strings.Trim(val, "'")
		case "First sector":
			fmt.Sscan(val, &p.First)
		case "Last sector":
			fmt.Sscan(val, &p.Last)
		}
	}
	if p.Last >= p.First && p.First > 0 {
		p.Size = p.Last - p.First + 1
	}
	return p
}

// probeFS says what blkid finds at a partition of a disk image
// (TYPE, LABEL, …).
func probeFS(t *testing.T, disk string, p gptPartition) map[string]string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-o", "export", "-O", fmt.Sprint(p.First*512), "-S", fmt.Sprint(p.Size*512), disk).CombinedOutput()
	if err != nil {
		t.Fatalf("blkid -p -O %d %s: %v\n%s", p.First*512, disk, err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// mountPartition mounts a partition of a disk image read-only (a loop
// device that goes away with the unmount at cleanup) and returns where.
func mountPartition(t *testing.T, disk string, p gptPartition, fstype string) string {
	t.Helper()
	dir := t.TempDir()
	opts := fmt.Sprintf("ro,loop,offset=%d,sizelimit=%d", p.First*512, p.Size*512)
	if fstype == "ext4" {
		opts += ",noload"
	}
	if out, err := exec.Command("mount", "-t", fstype, "-o", opts, disk, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t %s -o %s %s %s: %v\n%s", fstype, opts, disk, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// checkTree checks files under root: contents (substring), and symlinks
// (target suffix).
func checkTree(t *testing.T, root string, files map[string]string, links map[string]string) {
	t.Helper()
	for p, want := range files {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s on the disk = %q (%v), want it to contain %q", p, b, err, want)
		}
	}
	for p, want := range links {
		got, err := os.Readlink(filepath.Join(root, p))
		if err != nil || !strings.HasSuffix(got, want) {
			t.Errorf("readlink %s on the disk = %q (%v), want a link to …%s", p, got, err, want)
		}
	}
}

// e2ePayload is served as an asset and written to the disk by the config,
// fetched over HTTP and checked against its hash.
const e2ePayload = "fetched from Kindling over HTTP and verified\n"

func sha512Hex(s string) string {
	h := sha512.Sum512([]byte(s))
	return hex.EncodeToString(h[:])
}

const e2eSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKindlingE2EKeyxxxxxxxxxxxxxxxxxxxxxxxxxx e2e@kindling"

// provisionConfig partitions the empty /dev/vda (GPT, one root partition
// named kindling-root), makes ext4 labelled kroot, mounts it as the root
// and writes files, a user and units into it.
var provisionConfig = `variant: fcos
version: 1.5.0
storage:
  disks:
    - device: /dev/vda
      wipe_table: true
      partitions:
        - number: 1
          label: kindling-root
          type_guid: 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
  filesystems:
    - device: /dev/disk/by-partlabel/kindling-root
      format: ext4
      label: kroot
      path: /
      wipe_filesystem: true
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: e2e-node
    - path: /etc/kindling-e2e/payload
      mode: 0600
      contents:
        source: http://{{.request.host}}/assets/e2e-payload.txt
        verification:
          hash: sha512-` + sha512Hex(e2ePayload) + `
    - path: /etc/kindling-e2e/machine
      contents:
        inline: "mac={{.request.query.mac}}\n"
  links:
    - path: /etc/kindling-e2e/link
      target: payload
passwd:
  users:
    - name: core
      groups: [e2e-admins]
      ssh_authorized_keys:
        - ` + e2eSSHKey + `
  groups:
    - name: e2e-admins
systemd:
  units:
    - name: e2e-hello.service
      enabled: true
      contents: |
        [Unit]
        Description=Kindling e2e unit
        [Service]
        Type=oneshot
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
    - name: e2e-masked.service
      mask: true
`

// testFullBoot provisions an empty disk through a network boot and checks
// the disk and the report.
func testFullBoot(t *testing.T, uefi bool, target time.Duration) {
	l := newBootLab(t, []string{"kindling.finish=poweroff"}, map[string]string{
		"ignition/e2e.yaml": provisionConfig,
	})
	if err := os.WriteFile(filepath.Join(l.data, "assets", "e2e-payload.txt"), []byte(e2ePayload), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := l.startVM(vmOptions{UEFI: uefi, DiskMiB: 256})
	rep, took := vm.waitReport(150 * time.Second)
	evs := vm.events()
	t.Logf("VM start → report (%s): %s; boot steps: %s", rep.Result, took.Round(100*time.Millisecond), vm.milestones(evs))
	if rep.Result != "success" || rep.Report.Result != "success" {
		t.Fatalf("GET /report?mac=%s = result %q (agent: %q), stage %q, error %q; want success\n%s",
			pxeMAC, rep.Result, rep.Report.Result, rep.Stage, rep.Error, vm.l.tail("serial.log"))
	}
	wantStages := []string{"fetch:success", "disks:success", "mount:success", "files:success", "umount:success"}
	if got := rep.stageNames(); !inOrder(got, wantStages) {
		t.Errorf("report stages = %v, want in order %v", got, wantStages)
	}
	if took > target {
		t.Logf("VM start → report took %s, over the %s target", took.Round(100*time.Millisecond), target)
	}
	vm.waitExit(60 * time.Second)
	t.Logf("VM start → power off: %s", time.Since(vm.start).Round(100*time.Millisecond))

	got := steps(evs)
	want := []string{"dhcp:offer", "dhcp:ack", "http:boot.ipxe", "http:ipxe", "http:asset:vmlinuz", "http:asset:initrd.img",
		"http:ignition", "http:asset:e2e-payload.txt", "agent:report success"}
	if uefi {
		// OVMF's PXE client gets iPXE (ipxe.efi: kindling serve has no
		// -dhcp-snp here) over TFTP; that iPXE asks DHCP again.
		want = append([]string{"dhcp:offer", "dhcp:ack", "tftp:transfer:ipxe.efi"}, want[2:]...)
	}
	if !inOrder(got, want) {
		t.Errorf("boot steps = %v, want in order %v", got, want)
	}
	serial := vm.serial()
	for _, w := range []string{"KINDLING-REPORT {", `"result":"success"`, "reboot: Power down"} {
		if !strings.Contains(serial, w) {
			t.Errorf("serial console lacks %q", w)
		}
	}

	// The disk: a valid GPT with the named root partition, ext4 labelled
	// kroot on it, and the config's files, user and units inside.
	if out, err := exec.Command("sgdisk", "-v", vm.disk).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v disk.raw = %v\n%s", err, out)
	}
	p := readPartition(t, vm.disk, 1)
	if p.Name != "kindling-root" || p.TypeGUID != "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" || p.Size < 200<<11 {
		t.Errorf("sgdisk -i 1 disk.raw = %+v, want name kindling-root, type 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, filling the 256 MiB disk", p)
	}
	if fs := probeFS(t, vm.disk, p); fs["TYPE"] != "ext4" || fs["LABEL"] != "kroot" {
		t.Errorf("blkid -p of partition 1 = %v, want TYPE=ext4 LABEL=kroot", fs)
	}
	if out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", vm.disk, p.First*512)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn partition 1 = %v, want a clean filesystem\n%s", err, out)
	}
	root := mountPartition(t, vm.disk, p, "ext4")
	checkTree(t, root, map[string]string{
		"etc/hostname":             "e2e-node",
		"etc/kindling-e2e/payload": e2ePayload,
		"etc/kindling-e2e/machine": "mac=" + pxeMAC,
		"etc/passwd":               "core:*:1000:",
		"etc/group":                "e2e-admins:",
		"home/core/.ssh/authorized_keys.d/ignition": e2eSSHKey,
		"etc/systemd/system/e2e-hello.service":      "ExecStart=/bin/true",
		"etc/.ignition-result.json":                 "",
	}, map[string]string{
		"etc/kindling-e2e/link": "payload",
		"etc/systemd/system/multi-user.target.wants/e2e-hello.service": "/e2e-hello.service",
		"etc/systemd/system/e2e-masked.service":                        "/dev/null",
	})
	for _, f := range []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
	}{
		{"etc/kindling-e2e/payload", 0o600, 0, 0},
		{"etc/hostname", 0o644, 0, 0},
		{"home/core", os.ModeDir | 0o700, 1000, 100},
		{"home/core/.ssh/authorized_keys.d/ignition", 0o600, 1000, 100},
	} {
		fi, err := os.Lstat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("stat %s on the disk: %v", f.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != f.mode || st.Uid != f.uid || st.Gid != f.gid {
			t.Errorf("stat %s on the disk = %v %d:%d, want %v %d:%d", f.path, fi.Mode(), st.Uid, st.Gid, f.mode, f.uid, f.gid)
		}
	}
	if t.Failed() {
		out, _ := exec.Command("find", root, "-printf", "%M %u:%g %p %l\n").CombinedOutput()
		t.Logf("the root filesystem:\n%s", out)
		t.Logf("%s", l.tail("serial.log"))
	}
}

// TestFullBootBIOS: SeaBIOS and the NIC's iPXE ROM boot through Kindling's
// DHCP and HTTP into Debian's kernel and Kindling's initramfs; the agent
// provisions the empty disk, reports and powers off.
func TestFullBootBIOS(t *testing.T) {
	testFullBoot(t, false, 30*time.Second)
}

// TestFullBootUEFI: the same under OVMF, whose PXE client fetches iPXE
// over Kindling's TFTP.
func TestFullBootUEFI(t *testing.T) {
	testFullBoot(t, true, 40*time.Second)
}

// TestFailureReported: a config whose file has a wrong hash fails the
// files stage; the agent reports the failure to the server and powers
// off, and the disk (which the config does not touch) stays all zeros.
func TestFailureReported(t *testing.T) {
	badHash := strings.Repeat("0", 128)
	l := newBootLab(t, []string{"kindling.finish=poweroff"}, map[string]string{
		"ignition/e2e.yaml": `variant: fcos
version: 1.5.0
storage:
  files:
    - path: /etc/kindling-e2e/payload
      contents:
        source: http://{{.request.host}}/assets/e2e-payload.txt
        verification:
          hash: sha512-` + badHash + `
`,
	})
	if err := os.WriteFile(filepath.Join(l.data, "assets", "e2e-payload.txt"), []byte(e2ePayload), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := l.startVM(vmOptions{DiskMiB: 64})
	rep, took := vm.waitReport(150 * time.Second)
	t.Logf("VM start → report (%s): %s; boot steps: %s", rep.Result, took.Round(100*time.Millisecond), vm.milestones(vm.events()))
	t.Logf("reported failure: stage %q, operation %q, error %q", rep.Report.Stage, rep.Report.Operation, rep.Report.Error)
	if rep.Result != "failure" || rep.Stage != "files" || !strings.Contains(rep.Error, "hash") || rep.Report.Stage != "files" {
		t.Errorf("GET /report?mac=%s = result %q, stage %q, error %q (agent: stage %q, operation %q); want failure in stage files naming the hash",
			pxeMAC, rep.Result, rep.Stage, rep.Error, rep.Report.Stage, rep.Report.Operation)
	}
	if got := rep.stageNames(); !inOrder(got, []string{"fetch:success", "files:failure"}) {
		t.Errorf("report stages = %v, want fetch:success then files:failure", got)
	}
	if strings.Contains(rep.Error, e2ePayload) {
		t.Errorf("the report leaks the resource's contents: %q", rep.Error)
	}
	vm.waitExit(60 * time.Second)
	if s := vm.serial(); !strings.Contains(s, "PROVISIONING FAILED in stage files") || !strings.Contains(s, "reboot: Power down") {
		t.Errorf("serial console lacks the failure line or the power off\n%s", l.tail("serial.log"))
	}
	b, err := os.ReadFile(vm.disk)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("disk.raw has non-zero data at byte %d after a failed run that must not touch it", i)
	}
}

// debianImage builds (or finds cached) the Debian image of
// examples/debian-install and returns its path and SHA-256.
func debianImage(t *testing.T) (path, sum string) {
	t.Helper()
	dir := os.Getenv("KINDLING_TEST_IMAGE_DIR")
	if dir == "" {
		root := os.Getenv("KINDLING_TEST_CACHE")
		if root == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				t.Fatalf("no cache directory: set KINDLING_TEST_CACHE (%v)", err)
			}
			root = filepath.Join(home, ".cache", "kindling")
		}
		dir = filepath.Join(root, "debian-image")
	}
	ci := os.Getenv("CI") == "true"
	for _, tool := range []string{"debootstrap", "sgdisk", "mkfs.ext4", "mkfs.fat", "mcopy", "zerofree", "zstd", "losetup", "partx"} {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s not found: build-image.sh needs it (.ci/run installs debootstrap gdisk e2fsprogs dosfstools mtools zerofree zstd)", tool)
			}
			t.Skipf("%s not found: build-image.sh needs it (Debian packages debootstrap gdisk e2fsprogs dosfstools mtools zerofree zstd)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "sh", "../examples/debian-install/build-image.sh", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("examples/debian-install/build-image.sh %s: %v\n%s", dir, err, stderr.String())
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 || len(lines[len(lines)-1]) != 64 {
		t.Fatalf("build-image.sh %s printed %q, want the image's SHA-256 last", dir, out)
	}
	t.Logf("Debian image ready in %s: %s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(stderr.String()))
	return filepath.Join(dir, "debian-bookworm.raw.zst"), lines[len(lines)-1]
}

// TestInstallFlow: the installer initramfs streams the Debian image onto
// the empty disk, applies the Ignition config to the installed root,
// reports and reboots; the VM then boots Debian from its disk, where
// systemd starts the unit the config wrote, and that unit calls the
// server back (GET /metadata with the MAC the config wrote into a file).
func TestInstallFlow(t *testing.T) {
	needBoot(t) // before a long image build
	bootKernel(t)
	image, sum := debianImage(t)
	l := newBootLab(t, []string{
		"kindling.install.dev=/dev/vda",
		"kindling.install.image=http://{{.request.host}}/assets/debian-bookworm.raw.zst",
		"kindling.install.sha256=" + sum,
		"kindling.install.root=root",
		"kindling.finish=reboot",
	}, map[string]string{
		"ignition/e2e.yaml": `variant: fcos
version: 1.5.0
passwd:
  users:
    - name: e2e
      ssh_authorized_keys:
        - ` + e2eSSHKey + `
storage:
  files:
    - path: /etc/kindling-e2e/callback-url
      mode: 0644
      contents:
        inline: "http://{{.request.host}}/metadata?mac={{.request.query.mac}}&os=installed"
systemd:
  units:
    - name: kindling-e2e-callback.service
      enabled: true
      contents: |
        [Unit]
        Description=Tell the Kindling e2e test the installed system is up
        Wants=network-online.target
        After=network-online.target
        [Service]
        Type=oneshot
        ExecStart=/bin/sh -c 'exec /usr/bin/curl -fsS --retry 60 --retry-delay 1 --retry-all-errors -o /dev/null "$(cat /etc/kindling-e2e/callback-url)"'
        [Install]
        WantedBy=multi-user.target
`,
	})
	l.asset("debian-bookworm.raw.zst", image)

	vm := l.startVM(vmOptions{DiskMiB: 2048, MemoryMiB: 1024, Reboot: true})
	rep, took := vm.waitReport(300 * time.Second)
	t.Logf("VM start → install report (%s): %s", rep.Result, took.Round(100*time.Millisecond))
	if rep.Result != "success" {
		vm.stop()
		t.Fatalf("GET /report?mac=%s = result %q, stage %q, error %q; want success\n%s",
			pxeMAC, rep.Result, rep.Stage, rep.Error, l.tail("serial.log"))
	}
	if got := rep.stageNames(); !inOrder(got, []string{"fetch:success", "install:success", "files:success"}) {
		t.Errorf("report stages = %v, want fetch, install, files succeeded", got)
	}

	called, ok := vm.poll(400*time.Second, func() bool {
		for _, e := range vm.events() {
			if e.Source == "http" && e.Step == "metadata" {
				return true
			}
		}
		return false
	})
	for _, e := range vm.events() {
		if e.Source == "http" && e.Step == "metadata" {
			called = e.Time.Sub(vm.start) // as the server recorded it
			break
		}
	}
	evs := vm.events()
	if !ok {
		vm.stop()
		t.Fatalf("the installed system did not call back within %v of VM start (VM exited: %v)\nboot steps: %v\n%s",
			400*time.Second, vm.exited(), steps(evs), l.tail("serial.log"))
	}
	t.Logf("VM start → installed system's callback: %s (target 180s); boot steps: %s", called.Round(100*time.Millisecond), vm.milestones(evs))
	vm.stop()

	want := []string{"dhcp:ack", "http:ipxe", "http:asset:initrd.img", "http:ignition", "http:asset:debian-bookworm.raw.zst",
		"agent:report success", "http:metadata"}
	if got := steps(evs); !inOrder(got, want) {
		t.Errorf("boot steps = %v, want in order %v", got, want)
	}
	// On the console: the installer reboots, GRUB boots the disk, and
	// systemd starts the unit that called back.
	serial := vm.serial()
	last := 0
	for _, w := range []string{"KINDLING-REPORT {", "reboot: Restarting system", "Booting `Debian (Kindling image)'",
		"Welcome to \x1b[1mDebian GNU/Linux", "kindling-e2e-call"} {
		i := strings.Index(serial[last:], w)
		if i < 0 {
			t.Errorf("serial console lacks %q after byte %d: the installed system's boot is not all there\n%s", w, last, l.tail("serial.log"))
			break
		}
		last += i + len(w)
	}

	// The installed root carries what Ignition wrote.
	p := readPartition(t, vm.disk, 3)
	if p.Name != "root" {
		t.Fatalf("sgdisk -i 3 disk.raw = %+v, want the image's root partition", p)
	}
	// The image ends with its backup GPT (33 sectors) after the root.
	if in := rep.Report.Install; in == nil || in.Device != "/dev/vda" || in.Bytes < (p.Last+1+33)*512 || in.Root == "" {
		t.Errorf("report's install = %+v, want device /dev/vda, at least %d bytes written (the image up to its backup GPT), the root found", in, (p.Last+1+33)*512)
	}
	root := mountPartition(t, vm.disk, p, "ext4")
	checkTree(t, root, map[string]string{
		"etc/kindling-e2e/callback-url":                    "/metadata?mac=",
		"etc/passwd":                                       "\ne2e:",
		"home/e2e/.ssh/authorized_keys.d/ignition":         e2eSSHKey,
		"etc/systemd/system/kindling-e2e-callback.service": "ExecStart=",
		"etc/.ignition-result.json":                        "",
		"usr/lib/os-release":                               "Debian",
	}, map[string]string{
		"etc/systemd/system/multi-user.target.wants/kindling-e2e-callback.service": "/kindling-e2e-callback.service",
	})
}
