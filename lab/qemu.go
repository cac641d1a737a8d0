package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ovmfPairs are the OVMF code and variable-store files of common
// distributions, best first.
var ovmfPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"}, // Debian 12, Ubuntu 22.04+
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},       // older Debian and Ubuntu
	{"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},
	{"/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},
	{"/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"},
}

// findOVMF returns the first OVMF code/vars pair that exists.
func findOVMF() (code, vars string, err error) {
	for _, p := range ovmfPairs {
		if fileExists(p[0]) && fileExists(p[1]) {
			return p[0], p[1], nil
		}
	}
	return "", "", errors.New("-uefi: no OVMF firmware found (Debian package ovmf; looked for /usr/share/OVMF/OVMF_CODE_4M.fd and others)")
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// qemuArgs is the command line of one lab machine. The disk comes first
// in the boot order and the network second: an empty disk falls through
// to PXE at once, and a machine that installed itself boots its disk
// after the installer reboots. The NIC's option ROM is QEMU's default for
// virtio-net (efi-virtio.rom from Debian's ipxe-qemu: iPXE for BIOS and
// UEFI), so firmware goes straight to iPXE.
func qemuArgs(cfg Config, st *State, vm VM, ovmfCode string) []string {
	machine := "q35"
	if !cfg.UEFI {
		// SeaBIOS and BIOS iPXE print only to the screen unless told
		// there is none; then they mirror their text to the serial port.
		machine += ",graphics=off"
	}
	args := []string{
		"-name", vm.Name,
		"-machine", machine,
	}
	args = append(args, accelArgs(st.Accel)...)
	args = append(args,
		"-m", fmt.Sprint(cfg.MemoryMiB),
		"-smp", fmt.Sprint(cfg.CPUs),
		"-display", "none",
		"-monitor", "none",
		"-serial", "file:"+vm.Serial,
	)
	if cfg.UEFI {
		args = append(args,
			"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,file="+vm.Vars)
	}
	args = append(args,
		"-drive", "file="+vm.Disk+",format=raw,if=none,id=disk0,cache=unsafe",
		"-device", "virtio-blk-pci,drive=disk0,bootindex=1")
	if st.Network == "netns" {
		args = append(args, "-netdev", "tap,id=net0,ifname="+vm.Tap+",script=no,downscript=no")
	} else {
		args = append(args, "-netdev", "user,id=net0,bootfile="+st.ServerURL+"/boot.ipxe")
	}
	args = append(args, "-device", "virtio-net-pci,netdev=net0,mac="+vm.MAC+",bootindex=2")
	// A hardware RNG: without RDRAND (TCG) the guest kernel's random pool
	// may never be seeded, and the agent's DHCP blocks on it.
	args = append(args, "-device", "virtio-rng-pci")
	return args
}

func accelArgs(accel string) []string {
	if accel == "kvm" {
		return []string{"-accel", "kvm", "-cpu", "host"}
	}
	return []string{"-accel", "tcg"}
}

// accelVerdict is the cached outcome of the KVM probe.
type accelVerdict struct {
	BootID string    `json:"boot_id"`
	QEMU   string    `json:"qemu"`
	Accel  string    `json:"accel"`
	Reason string    `json:"reason"`
	Probed time.Time `json:"probed"`
}

// kvmProbeTimeout bounds the KVM test boot. A working KVM boots a kernel
// to its panic in a second or two; TCG takes about five.
const kvmProbeTimeout = 15 * time.Second

// Accelerator decides whether the lab's machines run under KVM or TCG.
// "kvm" and "tcg" are taken as given. For "auto", /dev/kvm existing says
// nothing (on nested or paravirtualised hosts KVM guests can hang), so it
// boots a kernel under KVM with no root filesystem and expects its panic
// on the serial port within 15 s; anything else means TCG. The verdict
// is cached in dir/accel.json until the host reboots or QEMU changes.
func Accelerator(ctx context.Context, want, qemu, dir string, log *slog.Logger) (accel, reason string) {
	if want == "kvm" || want == "tcg" {
		return want, "-accel " + want
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	qemuPath, err := exec.LookPath(qemu)
	if err != nil {
		return "tcg", fmt.Sprintf("%s not found", qemu)
	}
	key := qemuPath
	if fi, err := os.Stat(qemuPath); err == nil {
		key = fmt.Sprintf("%s %d %d", qemuPath, fi.Size(), fi.ModTime().Unix())
	}
	bootID := readTrim("/proc/sys/kernel/random/boot_id")
	cache := filepath.Join(dir, accelFile)
	if b, err := os.ReadFile(cache); err == nil {
		var v accelVerdict
		if json.Unmarshal(b, &v) == nil && v.BootID == bootID && v.QEMU == key && (v.Accel == "kvm" || v.Accel == "tcg") {
			return v.Accel, v.Reason + " (cached in " + cache + ")"
		}
	}
	accel, reason = probeKVM(ctx, qemuPath, dir, log)
	v := accelVerdict{BootID: bootID, QEMU: key, Accel: accel, Reason: reason, Probed: time.Now().UTC()}
	if b, err := json.MarshalIndent(v, "", "  "); err == nil {
		writeFileAtomic(cache, append(b, '\n'))
	}
	return accel, reason
}

func probeKVM(ctx context.Context, qemu, dir string, log *slog.Logger) (accel, reason string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", fmt.Sprintf("/dev/kvm unusable: %v", err)
	}
	f.Close()
	args, marker, cleanup, err := probeImage(dir, "/boot/vmlinuz-*")
	if err != nil {
		return "tcg", "no image for a KVM test boot: " + err.Error()
	}
	defer cleanup()
	ok, took, detail := probeBoot(ctx, qemu, "kvm", args, marker, filepath.Join(dir, "accel-probe.log"), kvmProbeTimeout)
	log.Info("KVM test boot", "ok", ok, "took", took.Round(10*time.Millisecond), "detail", detail)
	if ok {
		return "kvm", fmt.Sprintf("a test boot under KVM finished in %.1fs", took.Seconds())
	}
	return "tcg", "a test boot under KVM failed (" + detail + ")"
}

// probeImage is what the KVM test boots: the host's newest kernel with
// no initramfs (it panics once it has fully booted: "VFS: Unable to
// mount root fs"), or else iPXE as a Linux kernel with a script that
// prints a marker.
func probeImage(dir, kernelGlob string) (args []string, marker string, cleanup func(), err error) {
	kernels, _ := filepath.Glob(kernelGlob)
	sort.Sort(sort.Reverse(sort.StringSlice(kernels)))
	for _, k := range kernels {
		if f, err := os.Open(k); err == nil {
			f.Close()
			return []string{"-kernel", k, "-append", "console=ttyS0 panic=-1"}, "Kernel panic", func() {}, nil
		}
	}
	const lkrn = "/usr/lib/ipxe/ipxe.lkrn"
	if !fileExists(lkrn) {
		return nil, "", nil, errors.New("no readable /boot/vmlinuz-* and no " + lkrn + " (Debian package ipxe)")
	}
	script := filepath.Join(dir, "accel-probe.ipxe")
	if err := os.WriteFile(script, []byte("#!ipxe\necho KINDLING-PROBE-OK\npoweroff\n"), 0o644); err != nil {
		return nil, "", nil, err
	}
	return []string{"-machine", "graphics=off", "-kernel", lkrn, "-initrd", script}, "KINDLING-PROBE-OK",
		func() { os.Remove(script) }, nil
}

// probeBoot boots args under accel and reports whether marker reached
// the serial port within timeout.
func probeBoot(ctx context.Context, qemu, accel string, args []string, marker, serial string, timeout time.Duration) (ok bool, took time.Duration, detail string) {
	os.Remove(serial)
	defer os.Remove(serial)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append(accelArgs(accel), "-m", "256", "-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:"+serial)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, qemu, full...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return false, 0, err.Error()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(serial)
		if strings.Contains(string(b), marker) {
			took = time.Since(start)
			cancel()
			<-done
			return true, took, "marker seen"
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(serial)
			if strings.Contains(string(b), marker) {
				return true, time.Since(start), "marker seen"
			}
			if ctx.Err() != nil {
				return false, time.Since(start), fmt.Sprintf("no %q on the serial port within %v", marker, timeout)
			}
			return false, time.Since(start), fmt.Sprintf("qemu %v: %s", err, qemuMessage(stderr.String()))
		case <-tick.C:
		}
	}
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// createDisk makes a sparse raw disk of size bytes, replacing any old one.
func createDisk(path string, size int64) error {
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("creating disk %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("sizing disk %s: %w", path, err)
	}
	return f.Close()
}

func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// qemuMessage shortens QEMU's error output to its last line, without the
// program name and source location of an assertion.
func qemuMessage(out string) string {
	msg := strings.TrimSpace(out)
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	if _, rest, ok := strings.Cut(msg, "qemu-system-x86_64: "); ok {
		msg = rest
	}
	if i := strings.Index(msg, ": Assertion"); i >= 0 {
		msg = "assertion" + msg[i+len(": Assertion"):]
	}
	return msg
}
