package lab

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests below run real labs: root (network namespaces, taps), QEMU,
// iPXE and Debian's kernel. They skip, saying which package is missing,
// where any of that is not there.

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// kindlingBinary builds cmd/kindling once per test binary: the lab runs
// it as its supervisor and server. KINDLING_TEST_BINARY names a binary
// built already instead.
func kindlingBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KINDLING_TEST_BINARY"); p != "" {
		return p
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "kindling-lab-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "kindling")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, "github.com/kindlingboot/kindling/cmd/kindling").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/kindling: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// needLab skips unless the lab can run here.
func needLab(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and taps")
	}
	for _, tool := range append([]string{"qemu-system-x86_64", "ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (.ci/run installs it: qemu-system-x86, iproute2, cpio, dnsmasq-base): %v", tool, err)
		}
	}
	if !fileExists("/usr/lib/ipxe/qemu/efi-virtio.rom") && !fileExists("/usr/share/qemu/efi-virtio.rom") {
		t.Skip("no iPXE ROM for virtio-net (Debian package ipxe-qemu)")
	}
}

// hostKernel is the newest readable /boot/vmlinuz-* (Debian package
// linux-image-amd64).
func hostKernel(t *testing.T) string {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(ks)))
	for _, k := range ks {
		if f, err := os.Open(k); err == nil {
			f.Close()
			return k
		}
	}
	t.Skip("no readable /boot/vmlinuz-* (Debian package linux-image-amd64)")
	return ""
}

// markerData makes a data directory whose only profile boots the host's
// kernel with an initramfs whose /init (a static Go program) prints
// marker, then report (when not empty) as the agent's console report
// line, and powers off.
func markerData(t *testing.T, marker, report string) string {
	t.Helper()
	kernel := hostKernel(t)
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not found (Debian package cpio)")
	}
	work := t.TempDir()
	src := filepath.Join(work, "src")
	root := filepath.Join(work, "root")
	data := filepath.Join(work, "data")
	for _, d := range []string{src, filepath.Join(root, "dev"), filepath.Join(data, "profiles"), filepath.Join(data, "groups"), filepath.Join(data, "assets")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(src, "go.mod"): "module labinit\n\ngo 1.21\n",
		filepath.Join(src, "main.go"): `package main

import (
	"fmt"
	"syscall"
)

func main() {
	fmt.Println("` + marker + `")
	if report := ` + strconv.Quote(report) + `; report != "" {
		fmt.Println("KINDLING-REPORT " + report)
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
`,
		filepath.Join(data, "profiles", "marker.json"): `{"id": "marker", "boot": {"kernel": "/assets/vmlinuz",
			"initrd": ["--name main /assets/initrd.cpio"], "args": ["initrd=main", "console=ttyS0", "panic=5"]}}`,
		filepath.Join(data, "groups", "marker.json"): `{"id": "marker", "profile": "marker"}`,
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, "init"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the test /init: %v\n%s", err, out)
	}
	// The kernel opens /dev/console for init's output before /init runs.
	if err := syscall.Mknod(filepath.Join(root, "dev", "console"), syscall.S_IFCHR|0o600, 5<<8|1); err != nil {
		t.Fatalf("mknod /dev/console: %v", err)
	}
	var list bytes.Buffer
	for _, f := range []string{".", "dev", "dev/console", "init"} {
		list.WriteString(f + "\n")
	}
	cpio := exec.Command("cpio", "-o", "-H", "newc", "--quiet")
	cpio.Dir = root
	cpio.Stdin = &list
	img, err := cpio.Output()
	if err != nil {
		t.Fatalf("cpio -o -H newc: %v", err)
	}
	if err := os.WriteFile(filepath.Join(data, "assets", "initrd.cpio"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(data, "assets", "vmlinuz"), kernel); err != nil {
		t.Fatal(err)
	}
	return data
}

// kindling runs the kindling binary with a timeout.
func kindling(t *testing.T, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kindlingBinary(t), args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

// labDown takes the lab in dir down at the end of a test, pass or fail,
// and checks that nothing is left behind.
func labDown(t *testing.T, dir string) {
	t.Cleanup(func() {
		if !leftovers(dir) && !locked(dir) {
			return
		}
		out, code := kindling(t, 90*time.Second, "lab", "down", "-dir", dir)
		if code != 0 {
			t.Errorf("cleanup: kindling lab down -dir %s: exit %d\n%s", dir, code, out)
			// Last resort: the library, in-process.
			Down(context.Background(), dir, false, os.Stderr)
		}
	})
}

// assertGone checks that nothing of the lab in dir survives Down.
func assertGone(t *testing.T, dir string, st *State) {
	t.Helper()
	ns := NetnsName(dir)
	if netnsExists(ns) {
		t.Errorf("network namespace %s still exists after lab down", ns)
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), ns) {
		t.Errorf("ip netns list still shows %s:\n%s", ns, out)
	}
	procs := map[string]Proc{"supervisor": st.Supervisor, "server": st.Server, "dnsmasq": st.RA}
	for _, vm := range st.VMs {
		procs[vm.Name] = vm.Proc
	}
	for name, p := range procs {
		if p.Alive() {
			t.Errorf("%s (pid %d) still runs after lab down", name, p.PID)
		}
	}
	if pids := processesMentioning(dir); len(pids) > 0 {
		t.Errorf("processes whose command line names %s survive lab down: %v", dir, pids)
	}
	if locked(dir) {
		t.Errorf("the lab lock in %s is still held after lab down", dir)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.disk.raw")); len(m) > 0 {
		t.Errorf("disks left after lab down: %v", m)
	}
}

// processesMentioning lists live processes with s in their command line
// (what pgrep -f does).
func processesMentioning(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		if (Proc{PID: pid}).Alive() {
			out = append(out, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}

var progressLine = regexp.MustCompile(`^(vm\d+)\s+(\S+)\s+([\d.]+)s  (.*)$`)

// milestonesOf parses lab up's output: each machine's milestones and
// their elapsed seconds.
func milestonesOf(out string) map[string][]Milestone {
	got := map[string][]Milestone{}
	for _, line := range strings.Split(out, "\n") {
		m := progressLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s, _ := strconv.ParseFloat(m[3], 64)
		got[m[1]] = append(got[m[1]], Milestone{VM: m[1], MAC: m[2], Elapsed: time.Duration(s * float64(time.Second)), Text: m[4]})
	}
	return got
}

// inOrder finds each of want (prefixes) in ms, in order; it returns the
// first one missing.
func inOrder(ms []Milestone, want []string) (missing string, at map[string]time.Duration) {
	at = map[string]time.Duration{}
	i := 0
	for _, m := range ms {
		if i < len(want) && strings.HasPrefix(m.Text, want[i]) {
			at[want[i]] = m.Elapsed
			i++
		}
	}
	if i < len(want) {
		return want[i], at
	}
	return "", at
}

// labBoot is one boot test's setup.
type labBoot struct {
	uefi   bool
	n      int
	report bool   // /init prints an agent report on the console, which ends the progress
	net    string // -net
}

func TestLabBootBIOS(t *testing.T) { testLabBoot(t, labBoot{n: 2, report: true, net: "netns"}) }

func TestLabBootUEFI(t *testing.T) {
	if _, _, err := findOVMF(); err != nil {
		t.Skip(err)
	}
	testLabBoot(t, labBoot{uefi: true, n: 1, net: "netns"})
}

// TestLabBootUserNet: QEMU user networking, with the server on
// 127.0.0.1 and no DHCP from Kindling.
func TestLabBootUserNet(t *testing.T) { testLabBoot(t, labBoot{n: 1, net: "user"}) }

// testLabBoot: `kindling lab up -n N -wait` boots N machines over PXE
// (Kindling's DHCP, iPXE, HTTP) into Debian's kernel and a /init that
// prints a marker and powers off; every machine's milestones appear in
// order; status shows them; down leaves nothing behind.
func testLabBoot(t *testing.T, b labBoot) {
	needLab(t, "cpio", "go")
	n := b.n
	marker := fmt.Sprintf("KINDLING-LAB-TEST-%d", time.Now().UnixNano())
	rep := ""
	if b.report {
		rep = `{"result":"success","duration_ms":1200,"stages":[]}`
	}
	data := markerData(t, marker, rep)
	dir := filepath.Join(t.TempDir(), "lab")
	labDown(t, dir)

	args := []string{"lab", "up", "-dir", dir, "-n", strconv.Itoa(n), "-memory", "512", "-data-path", data, "-wait", "4m", "-net", b.net}
	if b.uefi {
		args = append(args, "-uefi")
	}
	start := time.Now()
	out, code := kindling(t, 6*time.Minute, args...)
	took := time.Since(start)
	t.Logf("kindling %s (%.1fs, exit %d):\n%s", strings.Join(args, " "), took.Seconds(), code, out)
	if code != 0 {
		for i := 1; i <= n; i++ {
			t.Logf("vm%d serial log (tail):\n%s", i, tail(filepath.Join(dir, fmt.Sprintf("vm%d.serial.log", i)), 3000))
		}
		t.Logf("server log (tail):\n%s", tail(filepath.Join(dir, serverLog), 3000))
		t.Fatalf("kindling lab up: exit %d, want 0", code)
	}

	want := []string{
		"iPXE started",
		"DHCP ack 10.77.0.",
		"iPXE running: boot.ipxe",
		"ipxe script served (group=marker profile=marker)",
		"kernel downloaded (/assets/vmlinuz)",
		"initrd downloaded (/assets/initrd.cpio)",
		"kernel booting (Linux ",
		"/init started",
		"powered off",
	}
	final := "powered off"
	if b.report {
		// The report is final: the power-off after it is not shown.
		final = "report: success (agent ran 1.2s)"
		want[len(want)-1] = final
	}
	if b.net == "user" {
		// QEMU answers DHCP; iPXE's fetch of boot.ipxe shows on the console.
		want = append(want[:1], want[2:]...)
	}
	// "machine stopped" may come after lab up returned: it returns at the
	// final milestone.
	got := milestonesOf(out)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("vm%d", i)
		missing, at := inOrder(got[name], want)
		if missing != "" {
			t.Errorf("%s milestones = %q: no %q in order after the ones before it", name, texts(got[name]), missing)
		}
		serial, err := os.ReadFile(filepath.Join(dir, name+".serial.log"))
		if err != nil || !bytes.Contains(serial, []byte(marker)) {
			t.Errorf("%s serial log: no %s (err %v)", name, marker, err)
		}
		t.Logf("%s timings (s from QEMU start): DHCP %.1f, ipxe script %.1f, kernel+initrd downloaded %.1f, Linux %.1f, /init %.1f, %q %.1f",
			name, at["DHCP ack 10.77.0."].Seconds(), at["ipxe script served (group=marker profile=marker)"].Seconds(),
			at["initrd downloaded (/assets/initrd.cpio)"].Seconds(), at["kernel booting (Linux "].Seconds(), at["/init started"].Seconds(),
			final, at[final].Seconds())
	}
	// Wait for QEMU to exit after the power-off, for the status below.
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := ReadState(dir)
		if err != nil {
			continue
		}
		exited := true
		for _, vm := range st.VMs {
			exited = exited && vm.Exit != ""
		}
		if exited {
			break
		}
	}

	// A second lab in the same directory is refused while this one runs.
	if out, code := kindling(t, time.Minute, "lab", "up", "-dir", dir, "-n", "1", "-detach"); code == 0 || !strings.Contains(out, "already running") {
		t.Errorf("second kindling lab up -dir %s: exit %d, output %q; want a refusal saying a lab is already running", dir, code, out)
	}

	status, code := kindling(t, time.Minute, "lab", "status", "-dir", dir)
	t.Logf("kindling lab status:\n%s", status)
	server := "server http://10.77.0.1:8080: running"
	if b.net == "user" {
		server = "server http://10.0.2.2:"
	}
	for _, w := range []string{server, "vm1", "stopped (exit status 0)", "serial " + filepath.Join(dir, "vm1.serial.log")} {
		if code != 0 || !strings.Contains(status, w) {
			t.Errorf("kindling lab status: exit %d, want output containing %q", code, w)
		}
	}

	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	down, code := kindling(t, 90*time.Second, "lab", "down", "-dir", dir)
	t.Logf("kindling lab down:\n%s", down)
	if code != 0 {
		t.Fatalf("kindling lab down: exit %d", code)
	}
	assertGone(t, dir, st)
	if _, err := os.Stat(filepath.Join(dir, "vm1.serial.log")); err != nil {
		t.Errorf("lab down removed the serial log: %v", err)
	}
	if out, code := kindling(t, time.Minute, "lab", "down", "-dir", dir); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("kindling lab down twice: exit %d, output %q; want success, nothing to do", code, out)
	}
}

// TestLabDownAfterCrash: with the supervisor killed, its machines and
// server keep running; lab up cleans them up before starting anew, and
// lab down cleans up after a crash and a namespace with no state at all.
func TestLabDownAfterCrash(t *testing.T) {
	needLab(t)
	dir := filepath.Join(t.TempDir(), "lab")
	labDown(t, dir)
	up := func() *State {
		t.Helper()
		out, code := kindling(t, 2*time.Minute, "lab", "up", "-dir", dir, "-n", "1", "-memory", "256", "-detach", "-accel", "tcg")
		if code != 0 {
			t.Fatalf("kindling lab up -detach: exit %d\n%s", code, out)
		}
		for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			st, err := ReadState(dir)
			if err == nil && st.Phase == PhaseRunning {
				return st
			}
			if err == nil && st.Phase == PhaseFailed {
				t.Fatalf("lab failed: %s", st.Error)
			}
		}
		t.Fatalf("lab in %s not running within 60s:\n%s", dir, tail(filepath.Join(dir, labLog), 3000))
		return nil
	}
	crash := func(st *State) {
		t.Helper()
		syscall.Kill(st.Supervisor.PID, syscall.SIGKILL)
		// Dead means gone and its lock released; on a loaded machine the
		// kill can take a while to land (a process in the middle of a
		// system call).
		for end := time.Now().Add(30 * time.Second); (st.Supervisor.Alive() || locked(dir)) && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
		}
		if st.Supervisor.Alive() || locked(dir) {
			t.Fatalf("supervisor pid %d: alive %v, lock held %v 30s after SIGKILL", st.Supervisor.PID, st.Supervisor.Alive(), locked(dir))
		}
		if !st.VMs[0].Alive() || !st.Server.Alive() {
			t.Fatalf("after killing the supervisor: vm1 alive %v, server alive %v; want both still running", st.VMs[0].Alive(), st.Server.Alive())
		}
	}

	first := up()
	crash(first)
	status, _ := kindling(t, time.Minute, "lab", "status", "-dir", dir)
	if !strings.Contains(status, "supervisor not running") {
		t.Errorf("kindling lab status after a crash = %q, want it to say the supervisor is not running", status)
	}
	second := up() // cleans up the crashed lab first
	assertGoneProcs(t, first)
	crash(second)
	out, code := kindling(t, 90*time.Second, "lab", "down", "-dir", dir)
	t.Logf("kindling lab down after a crash:\n%s", out)
	if code != 0 {
		t.Fatalf("kindling lab down after a crash: exit %d", code)
	}
	assertGone(t, dir, second)

	// A namespace of the lab's name with no state at all.
	other := filepath.Join(t.TempDir(), "stale")
	os.MkdirAll(other, 0o755)
	ns := NetnsName(other)
	if err := exec.Command("ip", "netns", "add", ns).Run(); err != nil {
		t.Fatalf("ip netns add %s: %v", ns, err)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, code := kindling(t, time.Minute, "lab", "down", "-dir", other); code != 0 || netnsExists(ns) {
		t.Errorf("kindling lab down -dir %s with a stale namespace: exit %d, namespace exists %v\n%s", other, code, netnsExists(ns), out)
	}
}

// TestLabReport: a report posted to the server's /report ends a
// machine's progress with its result, stage, operation and error.
func TestLabReport(t *testing.T) {
	needLab(t)
	dir := filepath.Join(t.TempDir(), "lab")
	labDown(t, dir)
	out, code := kindling(t, 2*time.Minute, "lab", "up", "-dir", dir, "-n", "1", "-memory", "256", "-detach", "-accel", "tcg")
	if code != 0 {
		t.Fatalf("kindling lab up -detach: exit %d\n%s", code, out)
	}
	var st *State
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if s, err := ReadState(dir); err == nil && s.Phase == PhaseRunning {
			st = s
			break
		}
	}
	if st == nil {
		t.Fatalf("lab in %s not running within 60s:\n%s", dir, tail(filepath.Join(dir, labLog), 3000))
	}
	// The machine is still in its firmware: the report comes first.
	body := `{"result":"failure","stage":"disks","operation":"create partition 1 on /dev/vda","error":"no space left on device"}`
	resp, err := httpClient(st).Post(st.PollURL+"/report?mac="+MAC(1), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST /report: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == 404 || resp.StatusCode == 405 {
		t.Skipf("the server has no POST /report (status %d)", resp.StatusCode)
	}
	out, code = kindling(t, 2*time.Minute, "lab", "watch", "-dir", dir, "-wait", "90s")
	t.Logf("kindling lab watch:\n%s", out)
	want := "report: failed at stage disks (create partition 1 on /dev/vda): no space left on device"
	if code == 0 || !strings.Contains(out, want) || !strings.Contains(out, "1 of 1 machine failed") {
		t.Errorf("kindling lab watch after a failure report: exit %d; want non-zero, %q and a summary of 1 failed machine", code, want)
	}
}

func assertGoneProcs(t *testing.T, st *State) {
	t.Helper()
	if st.VMs[0].Alive() || st.Server.Alive() || st.RA.Alive() {
		t.Errorf("a new lab up left the crashed lab's processes running: vm1 %v, server %v, dnsmasq %v", st.VMs[0].Alive(), st.Server.Alive(), st.RA.Alive())
	}
}

// TestProbeBoot checks the accelerator probe's test boots under TCG
// (both images: the host kernel, and iPXE as a kernel), then lets
// Accelerator decide for this machine and cache it.
func TestProbeBoot(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not found (Debian package qemu-system-x86)")
	}
	dir := t.TempDir()
	for _, glob := range []string{"/boot/vmlinuz-*", "/nonexistent/vmlinuz-*"} {
		args, marker, cleanup, err := probeImage(dir, glob)
		if err != nil {
			t.Logf("probeImage(%s): %v", glob, err)
			continue
		}
		ok, took, detail := probeBoot(context.Background(), "qemu-system-x86_64", "tcg", args, marker, filepath.Join(dir, "probe.log"), 90*time.Second)
		cleanup()
		if !ok {
			t.Errorf("probeBoot(tcg, %v) = false (%s), want the marker %q", args, detail, marker)
		}
		t.Logf("TCG test boot of %v: %.1fs", args, took.Seconds())
	}
	start := time.Now()
	accel, reason := Accelerator(context.Background(), "auto", "qemu-system-x86_64", dir, slog.Default())
	t.Logf("Accelerator(auto) = %s (%s) in %.1fs", accel, reason, time.Since(start).Seconds())
	if accel != "kvm" && accel != "tcg" {
		t.Fatalf("Accelerator(auto) = %q, want kvm or tcg", accel)
	}
	again, reason2 := Accelerator(context.Background(), "auto", "qemu-system-x86_64", dir, slog.Default())
	if again != accel || !strings.Contains(reason2, "cached") {
		t.Errorf("Accelerator(auto) again = %s (%s), want %s from the cache", again, reason2, accel)
	}
	if a, r := Accelerator(context.Background(), "tcg", "qemu-system-x86_64", dir, nil); a != "tcg" || r != "-accel tcg" {
		t.Errorf("Accelerator(tcg) = %s (%s), want tcg as given", a, r)
	}
}
