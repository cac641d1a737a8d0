package lab

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/matchbox/events"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func testVM() VM { return VM{Name: "vm1", MAC: "52:54:00:00:00:01", Started: t0} }

func texts(ms []Milestone) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Text)
	}
	return out
}

// TestSerialMilestones replays serial logs recorded from lab machines
// (SeaBIOS and OVMF, iPXE, Debian's kernel), whole and byte by byte.
func TestSerialMilestones(t *testing.T) {
	tests := []struct {
		file       string
		want       []string
		wantFailed bool
		wantHint   string
	}{
		{
			file: "bios-404.serial",
			want: []string{
				"iPXE started",
				"iPXE running: boot.ipxe fetched",
				"kernel download failed: 404 not found /assets/fedora-coreos/fedora-coreos-live-kernel.x86_64",
			},
			wantFailed: true,
			wantHint:   "DATA-PATH/assets/",
		},
		{
			file: "uefi-404.serial",
			want: []string{
				"iPXE started",
				"iPXE running: boot.ipxe fetched",
				"kernel download failed: 404 not found /assets/fedora-coreos/fedora-coreos-live-kernel.x86_64",
			},
			wantFailed: true,
			wantHint:   "DATA-PATH/assets/",
		},
		{
			file: "bios-ok.serial",
			want: []string{
				"iPXE started",
				"iPXE running: boot.ipxe fetched",
				"kernel downloaded (/assets/vmlinuz)",
				"initrd downloaded (/assets/initrd.cpio)",
				"kernel booting (Linux 6.1.0-56-amd64)",
				"/init started",
				"powered off",
			},
		},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{len(b), 1, 7} {
			tr := newTracker(testVM())
			var got []Milestone
			for i := 0; i < len(b); i += chunk {
				got = append(got, tr.serial(b[i:min(i+chunk, len(b))], t0.Add(time.Second))...)
			}
			if diff := cmp.Diff(tt.want, texts(got)); diff != "" {
				t.Errorf("serial(%s in %d-byte chunks) milestones (-want +got):\n%s", tt.file, chunk, diff)
				continue
			}
			last := got[len(got)-1]
			if !last.Final || last.Failed != tt.wantFailed {
				t.Errorf("serial(%s): last milestone %q final=%v failed=%v, want final, failed=%v", tt.file, last.Text, last.Final, last.Failed, tt.wantFailed)
			}
			if !strings.Contains(last.Hint, tt.wantHint) {
				t.Errorf("serial(%s): hint %q, want it to mention %q", tt.file, last.Hint, tt.wantHint)
			}
			if got[0].Elapsed != time.Second {
				t.Errorf("serial(%s): elapsed %v, want 1s after the machine started", tt.file, got[0].Elapsed)
			}
		}
	}
}

func TestSerialLines(t *testing.T) {
	long := strings.Repeat("x", 76) + "dire"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
		{"escapes", "\x1b[0;1miPXE 1.0\x1b[0m -- ok\x1b[=3h\r\n", []string{"iPXE 1.0 -- ok"}},
		{"reset", "\x1bc\x1b[?7l\x1b[2Jhello\n", []string{"hello"}},
		{"backspaces", "Press Ctrl-B...\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \b\b \bnet0: up\r\n", []string{"net0: up"}},
		{"carriage return overwrites", "Press Ctrl-B to configure\r          \r\n", []string{""}},
		{"80-column wrap joined", long + "\r\nctory (x)\r\nnext\r\n", []string{long + "ctory (x)", "next"}},
		{"partial line waits", "abc", nil},
	}
	for _, tt := range tests {
		var s serialLines
		got := s.feed([]byte(tt.in))
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: feed(%q) (-want +got):\n%s", tt.name, tt.in, diff)
		}
	}
}

func TestSerialLinePatterns(t *testing.T) {
	tests := []struct {
		line       string
		want       string
		final      bool
		failed     bool
		downloads  int // before the line
		wantHintIn string
	}{
		{line: "[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", want: "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)", final: true, failed: true},
		{line: "No bootable device.", want: "no bootable device: network boot failed and the disk is empty", final: true, failed: true},
		{line: "BdsDxe: No bootable option or device was found.", want: "no bootable device: network boot failed and the disk is empty", final: true, failed: true},
		{line: "[   9.9] reboot: Restarting system", want: "rebooting"},
		{line: "node1 login: ", want: "login prompt (node1)", final: true},
		{line: "time=… level=INFO msg=created stage=disks device=/dev/vda", want: "agent stage disks"},
		{line: "/assets/initrd.img... Permission denied (http://ipxe.org/0216eb3c)", downloads: 1, want: "initrd download failed: 403 forbidden /assets/initrd.img", final: true, failed: true},
		{line: "ipxe... No such file or directory (http://ipxe.org/2d0c613b)", want: "ipxe script download failed: 404 not found ipxe", final: true, failed: true, wantHintIn: "kindling select"},
		{line: "/assets/k... Connection timed out (http://ipxe.org/4c0e6036)", want: "kernel download failed: Connection timed out (ipxe.org/4c0e6036) /assets/k", final: true, failed: true},
		{line: "Configuring (net0 52:54:00:00:00:01)... ok"},
		{line: "Probing EDD (edd=off to disable)... ok"},
	}
	for _, tt := range tests {
		tr := newTracker(testVM())
		tr.downloads = tt.downloads
		m, ok := tr.serialLine(tt.line, t0)
		if tt.want == "" {
			if ok {
				t.Errorf("serialLine(%q) = %q, want no milestone", tt.line, m.Text)
			}
			continue
		}
		if !ok || m.Text != tt.want || m.Final != tt.final || m.Failed != tt.failed {
			t.Errorf("serialLine(%q) = %q (ok=%v final=%v failed=%v), want %q (final=%v failed=%v)", tt.line, m.Text, ok, m.Final, m.Failed, tt.want, tt.final, tt.failed)
		}
		if !strings.Contains(m.Hint, tt.wantHintIn) {
			t.Errorf("serialLine(%q) hint = %q, want it to contain %q", tt.line, m.Hint, tt.wantHintIn)
		}
	}
}

func TestEventMilestones(t *testing.T) {
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	mac := "52:54:00:00:00:01"
	first := []events.Event{
		{Time: at(-5), MAC: mac, Source: "http", Step: "ipxe", Group: "old", Profile: "old"}, // before this boot
		{Time: at(2.4), MAC: mac, Source: "dhcp", Step: "offer", IP: "10.77.0.100", Arch: "x86-bios", File: "http://10.77.0.1:8080/boot.ipxe"},
		{Time: at(2.5), MAC: mac, Source: "dhcp", Step: "ack", IP: "10.77.0.100", Arch: "x86-bios", File: "http://10.77.0.1:8080/boot.ipxe"},
		{Time: at(2.6), MAC: mac, Source: "http", Step: "boot.ipxe", File: "/boot.ipxe"},
		{Time: at(2.7), MAC: mac, Source: "http", Step: "ipxe", Group: "node1", Profile: "worker"},
		{Time: at(2.8), MAC: mac, Source: "http", Step: "asset", File: "/assets/vmlinuz"},
	}
	second := append(first,
		events.Event{Time: at(9), MAC: mac, Source: "dhcp", Step: "ack", IP: "10.77.0.100", Arch: "x86-bios", File: "http://10.77.0.1:8080/boot.ipxe"}, // a retry: same text
		events.Event{Time: at(9.5), MAC: mac, Source: "tftp", Step: "transfer", File: "snponly.efi", Error: "timeout"},
		events.Event{Time: at(10), MAC: mac, Source: "dhcp", Step: "ack", IP: "10.77.0.100", Arch: "none"},
		events.Event{Time: at(11), MAC: mac, Source: "http", Step: "ignition", Group: "node1", Profile: "worker"},
		events.Event{Time: at(12), MAC: mac, Source: "agent", Step: "report success"}, // read from /report instead
	)
	tr := newTracker(testVM())
	got1 := tr.events(first)
	got2 := tr.events(second)
	want1 := []string{
		"DHCP ack 10.77.0.100 (x86-bios, boot file http://10.77.0.1:8080/boot.ipxe)",
		"iPXE running: boot.ipxe served",
		"ipxe script served (group=node1 profile=worker)",
	}
	want2 := []string{
		"TFTP snponly.efi failed: timeout",
		"DHCP ack 10.77.0.100 (an OS DHCP client: no boot file)",
		"Ignition config served (group=node1 profile=worker)",
	}
	if diff := cmp.Diff(want1, texts(got1)); diff != "" {
		t.Errorf("events(first) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want2, texts(got2)); diff != "" {
		t.Errorf("events(second), repeating the first (-want +got):\n%s", diff)
	}
	if got1[1].Elapsed != 2600*time.Millisecond {
		t.Errorf("boot.ipxe elapsed = %v, want 2.6s", got1[1].Elapsed)
	}
	if want := "vm1  52:54:00:00:00:01    2.7s  ipxe script served (group=node1 profile=worker)"; got1[2].String() != want {
		t.Errorf("String() = %q, want %q", got1[2].String(), want)
	}
}

func TestReport(t *testing.T) {
	tests := []struct {
		body   string
		want   string
		failed bool
		ok     bool
	}{
		{body: `{"mac": "52:54:00:00:00:01", "received": "2026-11-24T12:00:09Z", "result": "success", "report": {"result": "success", "duration_ms": 1530, "stages": []}}`, want: "report: success (agent ran 1.5s)", ok: true},
		{body: `{"mac": "52:54:00:00:00:01", "received": "2026-11-24T12:00:09Z", "result": "failure", "stage": "files", "error": "hash mismatch", "report": {"result": "failure", "stage": "files", "operation": "write /etc/motd", "error": "hash mismatch"}}`, want: "report: failed at stage files (write /etc/motd): hash mismatch", failed: true, ok: true},
		{body: `{"result": "skipped", "reason": "already provisioned", "stages": []}`, want: "report: skipped: already provisioned", ok: true},
		{body: `{"success": true, "stages": []}`, want: "report: success", ok: true},
		{body: `{"status": "failed", "stage": "disks", "operation": "create /dev/vda1", "error": "device busy"}`, want: "report: failed at stage disks (create /dev/vda1): device busy", failed: true, ok: true},
		{body: `{"report": {"ok": false, "failed_stage": "files", "error": "hash mismatch"}}`, want: "report: failed at stage files: hash mismatch", failed: true, ok: true},
		{body: `{"mac": "52:54:00:00:00:01"}`, want: `report received: {"mac": "52:54:00:00:00:01"}`, ok: true},
		{body: `{"result": "success", "received": "2026-11-24T11:00:00Z"}`}, // before the machine started
		{body: `not json`},
		{body: ``},
	}
	for _, tt := range tests {
		tr := newTracker(testVM())
		m, ok := tr.fromReport([]byte(tt.body), t0.Add(time.Minute))
		if ok != tt.ok || m.Text != tt.want || m.Failed != tt.failed || (ok && !m.Final) {
			t.Errorf("fromReport(%s) = %q ok=%v failed=%v final=%v, want %q ok=%v failed=%v final", tt.body, m.Text, ok, m.Failed, m.Final, tt.want, tt.ok, tt.failed)
		}
		if ok {
			if _, again := tr.fromReport([]byte(tt.body), t0.Add(2*time.Minute)); again {
				t.Errorf("fromReport(%s) twice: reported again", tt.body)
			}
		}
	}
}

func TestReportOnConsole(t *testing.T) {
	tr := newTracker(testVM())
	got := tr.serial([]byte("[ 4.2] time=x level=INFO msg=\"stage started\" stage=disks\n"+
		"[ 4.3] time=x level=INFO msg=\"stage started\" stage=files\n"+
		"ignite: PROVISIONING FAILED in stage files: hash mismatch\n"+
		`KINDLING-REPORT {"result":"failure","stage":"files","operation":"write /etc/motd","error":"hash mismatch"}`+"\n"+
		"[ 5.0] reboot: Power down\n"), t0)
	want := []string{"agent stage disks", "agent stage files", "report: failed at stage files (write /etc/motd): hash mismatch"}
	if diff := cmp.Diff(want, texts(got)); diff != "" {
		t.Errorf("serial(agent output) (-want +got):\n%s", diff)
	}
	if last := got[len(got)-1]; !last.Final || !last.Failed {
		t.Errorf("console report: final=%v failed=%v, want a final failure", last.Final, last.Failed)
	}
	// The same report from the server, received earlier, is not a second
	// final milestone once the tracker decides.
	if m, ok := tr.fromReport([]byte(`{"result": "failure", "stage": "files"}`), t0.Add(time.Minute)); !ok || len(tr.add(nil, m, false)) != 0 {
		t.Errorf("a server report after the console report (later) = %q, %v; want it read and dropped as after the final milestone", m.Text, ok)
	}
}

// TestReportOutranksPowerOff: the agent posts its report and powers off;
// the power-off is read from the serial log before the report is fetched
// from the server, but the report is the final milestone.
func TestReportOutranksPowerOff(t *testing.T) {
	tr := newTracker(testVM())
	off := tr.serial([]byte("[ 9.0] reboot: Power down\n"), t0.Add(10*time.Second))
	m, ok := tr.fromReport([]byte(`{"received": "2026-11-24T12:00:09Z", "result": "failure", "stage": "disks", "error": "no disk"}`), t0.Add(11*time.Second))
	if !ok {
		t.Fatalf("fromReport after a power-off: not read")
	}
	rep := tr.add(nil, m, false)
	if len(off) != 1 || !off[0].Final || len(rep) != 1 || !rep[0].Final || !rep[0].Failed || !rep[0].Time.Before(off[0].Time) {
		t.Errorf("power-off %+v, then report %+v: want both final, the report failed and earlier", off, rep)
	}
}

func TestFinalStopsMilestones(t *testing.T) {
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tr := newTracker(testVM())
	got := tr.serial([]byte("/assets/k... No such file or directory (http://ipxe.org/2d0c613b)\n"), at(3))
	got = append(got, tr.serial([]byte("iPXE 1.0.0\n[ 1] Linux version 6.1\n"), at(4))...)
	// Server events are read after the serial log: those from before the
	// final milestone still count, later ones do not.
	got = append(got, tr.events([]events.Event{
		{Time: at(2.5), MAC: "52:54:00:00:00:01", Source: "http", Step: "ipxe", Group: "g", Profile: "p"},
		{Time: at(5), MAC: "52:54:00:00:00:01", Source: "dhcp", Step: "ack", IP: "10.77.0.100", Arch: "x86-bios"},
	})...)
	if diff := cmp.Diff([]string{"kernel download failed: 404 not found /assets/k", "ipxe script served (group=g profile=p)"}, texts(got)); diff != "" {
		t.Errorf("milestones around a final one (-want +got):\n%s", diff)
	}
	if got[1].Final {
		t.Errorf("an event read after the final milestone is final too")
	}
	m := tr.exited("exit status 0", "", at(6))
	if m.Text != "machine stopped (qemu exit status 0)" || m.Failed {
		t.Errorf("exited(0) after a final milestone = %q failed=%v", m.Text, m.Failed)
	}
	tr = newTracker(testVM())
	m = tr.exited("exit status 1", "qemu-system-x86_64: failed to find romfile \"efi-virtio.rom\"", t0)
	if !m.Failed || !m.Final || !strings.Contains(m.Hint, "ipxe-qemu") {
		t.Errorf("exited(1, romfile) = %+v, want a final failure with a hint naming ipxe-qemu", m)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"4G", 4 << 30, false}, {"512M", 512 << 20, false}, {"1GiB", 1 << 30, false}, {"2gb", 2 << 30, false},
		{"1048576", 1 << 20, false}, {"1T", 1 << 40, false}, {"", 0, true}, {"-1G", 0, true}, {"4X", 0, true}, {"G", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestNames(t *testing.T) {
	for i, want := range map[int]string{1: "52:54:00:00:00:01", 10: "52:54:00:00:00:0a", 100: "52:54:00:00:00:64", 300: "52:54:00:00:01:2c"} {
		if got := MAC(i); got != want {
			t.Errorf("MAC(%d) = %q, want %q", i, got, want)
		}
	}
	a, b := NetnsName("/root/kindling-lab"), NetnsName("/tmp/kindling-lab")
	if a == b || !strings.HasPrefix(a, "kindling-lab-") || len(a) != len("kindling-lab-")+8 || a != NetnsName("/root/kindling-lab") {
		t.Errorf("NetnsName = %q, %q: want stable, distinct, kindling-lab-<8 hex>", a, b)
	}
}

func TestQEMUArgs(t *testing.T) {
	cfg, err := Config{Dir: "/l", VMs: 1, Network: "netns", Kindling: "/k", QEMU: "q"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	vm := VM{Name: "vm1", MAC: "52:54:00:00:00:01", Tap: "tap1", Disk: "/l/vm1.disk.raw", Serial: "/l/vm1.serial.log", Vars: "/l/vm1.vars.fd"}
	st := &State{Network: "netns", Accel: "tcg", ServerURL: "http://10.77.0.1:8080"}
	want := "-name vm1 -machine q35,graphics=off -accel tcg -m 1024 -smp 1 -display none -monitor none -serial file:/l/vm1.serial.log " +
		"-drive file=/l/vm1.disk.raw,format=raw,if=none,id=disk0,cache=unsafe -device virtio-blk-pci,drive=disk0,bootindex=1 " +
		"-netdev tap,id=net0,ifname=tap1,script=no,downscript=no -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=2 -device virtio-rng-pci"
	if got := strings.Join(qemuArgs(cfg, st, vm, ""), " "); got != want {
		t.Errorf("qemuArgs(BIOS, netns) =\n%s\nwant\n%s", got, want)
	}
	cfg.UEFI, cfg.MemoryMiB, cfg.CPUs = true, 2048, 2
	st = &State{Network: "user", Accel: "kvm", ServerURL: "http://10.0.2.2:4567"}
	want = "-name vm1 -machine q35 -accel kvm -cpu host -m 2048 -smp 2 -display none -monitor none -serial file:/l/vm1.serial.log " +
		"-drive if=pflash,format=raw,readonly=on,file=/ovmf/CODE.fd -drive if=pflash,format=raw,file=/l/vm1.vars.fd " +
		"-drive file=/l/vm1.disk.raw,format=raw,if=none,id=disk0,cache=unsafe -device virtio-blk-pci,drive=disk0,bootindex=1 " +
		"-netdev user,id=net0,bootfile=http://10.0.2.2:4567/boot.ipxe -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=2 -device virtio-rng-pci"
	if got := strings.Join(qemuArgs(cfg, st, vm, "/ovmf/CODE.fd"), " "); got != want {
		t.Errorf("qemuArgs(UEFI, user, kvm) =\n%s\nwant\n%s", got, want)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{VMs: 101}, "-n 101"},
		{Config{VMs: -1}, "-n -1"},
		{Config{MemoryMiB: 10}, "-memory 10"},
		{Config{Accel: "hvf"}, `-accel "hvf"`},
		{Config{Network: "bridge"}, `-net "bridge"`},
	}
	for _, tt := range tests {
		_, err := tt.cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("withDefaults(%+v) = %v, want an error naming %s", tt.cfg, err, tt.want)
		}
	}
}

func TestProcAlive(t *testing.T) {
	self := procOf(os.Getpid(), "")
	if !self.Alive() {
		t.Errorf("procOf(self).Alive() = false")
	}
	if (Proc{PID: os.Getpid(), StartTicks: self.StartTicks + 1}).Alive() {
		t.Errorf("Alive() with another start time = true, want false (a reused PID)")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	p := procOf(cmd.Process.Pid, "")
	time.Sleep(300 * time.Millisecond) // exited, not yet reaped: a zombie
	if p.Alive() {
		t.Errorf("Alive() of a zombie = true")
	}
	cmd.Wait()
	if p.Alive() {
		t.Errorf("Alive() of a reaped process = true")
	}
}

func TestProgressFile(t *testing.T) {
	dir := t.TempDir()
	p, err := openProgress(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	p.add(Milestone{VM: "vm1", Time: t0.Add(2 * time.Second), Text: "second"}, Milestone{VM: "vm1", Time: t0, Text: "first"})
	f, _ := os.OpenFile(filepath.Join(dir, progressFile), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"vm":"vm1","text":"par`) // a line being written
	f.Close()
	ms, off, err := readProgress(dir, 0)
	if err != nil || !cmp.Equal(texts(ms), []string{"first", "second"}) {
		t.Fatalf("readProgress = %q, %v; want [first second] (sorted, partial line left)", texts(ms), err)
	}
	f, _ = os.OpenFile(filepath.Join(dir, progressFile), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("tial\"}\n")
	f.Close()
	ms, _, _ = readProgress(dir, off)
	if !cmp.Equal(texts(ms), []string{"partial"}) {
		t.Errorf("readProgress(from %d) = %q, want [partial]", off, texts(ms))
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		s    Summary
		want string
	}{
		{Summary{VMs: []VMResult{{Name: "vm1", Final: true}}}, ""},
		{Summary{VMs: []VMResult{{Name: "vm1", Final: true}, {Name: "vm2", Final: true, Failed: true}}}, "1 of 2 machines failed (vm2)"},
		{Summary{VMs: []VMResult{{Name: "vm1"}}, TimedOut: true, Waited: 90 * time.Second}, "1 of 1 machine did not finish within 1m30s (vm1)"},
	}
	for _, tt := range tests {
		err := tt.s.Err()
		if (err == nil && tt.want != "") || (err != nil && err.Error() != tt.want) {
			t.Errorf("Summary%+v.Err() = %v, want %q", tt.s.VMs, err, tt.want)
		}
		var b bytes.Buffer
		tt.s.Write(&b)
		if !strings.Contains(b.String(), "vm1") {
			t.Errorf("Summary.Write = %q, want a line per machine", b.String())
		}
	}
}

func TestQEMUMessage(t *testing.T) {
	in := "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == n' failed.\n"
	if got, want := qemuMessage(in), "assertion `ret == n' failed."; got != want {
		t.Errorf("qemuMessage(%q) = %q, want %q", in, got, want)
	}
}

// TestUpRefusesWhileLocked: a supervisor holds the directory's lock.
func TestUpRefusesWhileLocked(t *testing.T) {
	dir := t.TempDir()
	lock, err := tryLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	lock.WriteString("4242\n")
	_, err = Up(context.Background(), Config{Dir: dir, Network: "user", Kindling: "/bin/true", QEMU: "true"})
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "pid 4242") {
		t.Errorf("Up(locked dir) = %v, want ErrRunning naming pid 4242", err)
	}
	if !locked(dir) {
		t.Errorf("locked(dir) = false while the lock is held")
	}
}

func TestDownNothing(t *testing.T) {
	var b bytes.Buffer
	dir := filepath.Join(t.TempDir(), "nolab")
	if err := Down(context.Background(), dir, false, &b); err != nil || !strings.Contains(b.String(), "nothing to do") {
		t.Errorf("Down(missing dir) = %v, output %q; want nil and nothing to do", err, b.String())
	}
	os.Mkdir(dir, 0o755)
	b.Reset()
	if err := Down(context.Background(), dir, true, &b); err != nil || !strings.Contains(b.String(), "removed "+dir) {
		t.Errorf("Down(empty dir, purge) = %v, output %q; want the directory removed", err, b.String())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Down -purge, stat(%s) = %v, want not exist", dir, err)
	}
}

// TestInheritedLockChecksTheFile: Supervise takes fd 3 as the lock only
// when it is the lab's lock file.
func TestInheritedLockChecksTheFile(t *testing.T) {
	dir := t.TempDir()
	f, err := inheritedLock(dir) // fd 3 in a test binary is not the lab's lock
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !locked(dir) {
		t.Errorf("inheritedLock(%s) did not lock the directory", dir)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, lockFile))
	if st.Ino != fi.Sys().(*syscall.Stat_t).Ino {
		t.Errorf("inheritedLock returned a file that is not %s", filepath.Join(dir, lockFile))
	}
}

// TestLibvirtExample checks examples/libvirt: the network definitions
// against libvirt's schema (virt-xml-validate, Debian package
// libvirt-clients; xmllint, libxml2-utils, for well-formedness at least)
// and the script's syntax and the commands it would run.
func TestLibvirtExample(t *testing.T) {
	dir := filepath.Join("..", "examples", "libvirt")
	xmls, _ := filepath.Glob(filepath.Join(dir, "*.xml"))
	if len(xmls) != 2 {
		t.Fatalf("examples/libvirt: %d network definitions, want 2", len(xmls))
	}
	validate, verr := exec.LookPath("virt-xml-validate")
	xmllint, lerr := exec.LookPath("xmllint")
	for _, x := range xmls {
		switch {
		case verr == nil:
			if out, err := exec.Command(validate, x, "network").CombinedOutput(); err != nil {
				t.Errorf("virt-xml-validate %s network: %v\n%s", x, err, out)
			}
		case lerr == nil:
			if out, err := exec.Command(xmllint, "--noout", x).CombinedOutput(); err != nil {
				t.Errorf("xmllint %s: %v\n%s", x, err, out)
			}
		default:
			t.Logf("neither virt-xml-validate (libvirt-clients) nor xmllint (libxml2-utils): %s not checked", x)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	script := filepath.Join(dir, "lab.sh")
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", script, err, out)
	}
	// Without libvirtd (or virsh) the dry run prints the whole plan.
	cmd := exec.Command(bash, script, "up", "-n", "2", "-uefi")
	cmd.Env = append(os.Environ(), "DRY_RUN=1", "LIBVIRT_DEFAULT_URI=test:///nonexistent")
	out, _ := cmd.CombinedOutput()
	for _, want := range []string{
		"virsh net-define " + mustAbs(t, filepath.Join(dir, "network-kindling-dhcp.xml")),
		"--name kindling-vm2",
		`mac=52:54:00:00:00:02\,boot.order=2`,
		"--boot uefi",
		"-dhcp-interface virbr-kindling",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("DRY_RUN=1 lab.sh up -n 2 -uefi: output lacks %q:\n%s", want, out)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestEventTextFailures(t *testing.T) {
	for _, tc := range []struct {
		e    events.Event
		want string
	}{
		{events.Event{Source: "http", Step: "ignition", Group: "g", Profile: "p"}, "Ignition config served (group=g profile=p)"},
		{events.Event{Source: "http", Step: "ignition", Group: "g", Profile: "p", Error: "500 rendering failed"}, "Ignition config failed (group=g profile=p): 500 rendering failed"},
		{events.Event{Source: "http", Step: "ipxe", Error: "404 no group matches"}, "ipxe script failed: 404 no group matches"},
	} {
		if got := eventText(tc.e); got != tc.want {
			t.Errorf("eventText(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}
