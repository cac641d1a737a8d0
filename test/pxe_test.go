package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox/events"
)

// pxeLab is a private network namespace with a bridge (the "rack"), a tap
// for one VM, and Kindling serving DHCP, TFTP and HTTP on the bridge.
type pxeLab struct {
	t        *testing.T
	ns, tap  string
	serverIP string
	dir      string
	procs    []*exec.Cmd
}

const pxeMAC = "52:54:00:12:34:56"

func need(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and tap devices")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (.ci/run installs it): %v", tool, err)
		}
	}
}

// buildKindling builds the kindling binary once per test binary.
var kindlingBin string

func buildKindling(t *testing.T) string {
	t.Helper()
	if kindlingBin != "" {
		return kindlingBin
	}
	dir, err := os.MkdirTemp("", "kindling-bin-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "kindling")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/kindling").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/kindling: %v\n%s", err, out)
	}
	kindlingBin = bin
	return bin
}

// newPXELab makes the namespace and starts Kindling on it. The data
// directory holds a profile "pxe" and a group "vm" (pxeMAC → pxe); files in
// data (path under the data directory → contents) are written over them
// before the server starts.
func newPXELab(t *testing.T, dhcpMode string, data ...map[string]string) *pxeLab {
	need(t, "ip", "qemu-system-x86_64")
	for _, f := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s missing (Debian package ipxe; .ci/run installs it)", f)
		}
	}
	id := fmt.Sprintf("%04x", rand.Intn(1<<16))
	l := &pxeLab{t: t, ns: "kpxe-" + id, tap: "ktap" + id, serverIP: "10.77.0.1", dir: t.TempDir()}
	t.Cleanup(l.close)
	l.run("ip", "netns", "add", l.ns)
	l.nsrun("ip", "link", "set", "lo", "up")
	l.nsrun("ip", "link", "add", "kbr0", "type", "bridge")
	l.nsrun("ip", "addr", "add", l.serverIP+"/24", "dev", "kbr0")
	l.nsrun("ip", "-6", "addr", "add", "fd77::1/64", "dev", "kbr0", "nodad")
	l.nsrun("ip", "link", "set", "kbr0", "up")
	l.nsrun("ip", "tuntap", "add", "dev", l.tap, "mode", "tap")
	l.nsrun("ip", "link", "set", l.tap, "master", "kbr0")
	l.nsrun("ip", "link", "set", l.tap, "up")
	// iPXE waits ~13 s for IPv6 router advertisements when none come;
	// dnsmasq sends them (DHCPv4 stays Kindling's: --port=0 and ra-only).
	// In proxy mode it is also the site's DHCP server, which knows nothing
	// of PXE: Kindling adds only the boot information.
	dnsmasq := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--interface=kbr0", "--bind-interfaces", "--enable-ra", "--dhcp-range=fd77::,ra-only",
		"--pid-file=" + filepath.Join(l.dir, "dnsmasq.pid"), "--dhcp-leasefile=" + filepath.Join(l.dir, "dnsmasq.leases")}
	if dhcpMode == "proxy" {
		need(t, "dnsmasq")
		dnsmasq = append(dnsmasq, "--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h", "--no-ping")
	}
	if _, err := exec.LookPath("dnsmasq"); err == nil {
		l.start("dnsmasq", dnsmasq...)
	}

	dataDir := filepath.Join(l.dir, "data")
	files := map[string]string{
		"profiles/pxe.json": `{"id": "pxe", "boot": {"kernel": "/assets/vmlinuz-pxe-test",
			"initrd": ["--name main /assets/initrd-pxe-test"], "args": ["initrd=main", "console=ttyS0"]}}`,
		"groups/vm.json":          `{"id": "vm", "profile": "pxe", "selector": {"mac": "` + pxeMAC + `"}}`,
		"assets/vmlinuz-pxe-test": "not a kernel: the test stops the VM once it has been fetched\n",
		"assets/initrd-pxe-test":  "not an initrd\n",
	}
	for _, d := range data {
		for name, body := range d {
			files[name] = body
		}
	}
	for name, body := range files {
		p := filepath.Join(dataDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"serve", "-address", l.serverIP + ":8080", "-data-path", dataDir, "-log-level", "debug",
		"-dhcp", dhcpMode, "-dhcp-interface", "kbr0", "-tftp-address", l.serverIP + ":69", "-tftp-root", "/usr/lib/ipxe"}
	if dhcpMode == "server" {
		args = append(args, "-dhcp-range", "10.77.0.100-10.77.0.199")
	}
	bin := buildKindling(t)
	if help, _ := exec.Command(bin, "serve", "-h").CombinedOutput(); !strings.Contains(string(help), "-dhcp-interface") {
		t.Skip("kindling serve has no -dhcp flags yet")
	}
	l.start(bin, args...)
	l.waitHTTP()
	return l
}

func (l *pxeLab) run(name string, args ...string) {
	l.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (l *pxeLab) nsrun(args ...string) {
	l.run("ip", append([]string{"netns", "exec", l.ns}, args...)...)
}

// start runs a long-lived process in the namespace, its output in a log
// file named after it.
func (l *pxeLab) start(name string, args ...string) *exec.Cmd {
	l.t.Helper()
	log, err := os.Create(filepath.Join(l.dir, filepath.Base(name)+".log"))
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns, name}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("starting %s: %v", name, err)
	}
	l.procs = append(l.procs, cmd)
	return cmd
}

func (l *pxeLab) curl(path string) ([]byte, error) {
	return exec.Command("ip", "netns", "exec", l.ns, "curl", "-sf", "--max-time", "5", "http://"+l.serverIP+":8080"+path).Output()
}

func (l *pxeLab) waitHTTP() {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := l.curl("/healthz"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("kindling did not answer /healthz in the namespace within 30s\n%s", l.tail("kindling.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *pxeLab) tail(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, name))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return fmt.Sprintf("--- %s (tail) ---\n%s", name, b)
}

func (l *pxeLab) close() {
	for i := len(l.procs) - 1; i >= 0; i-- {
		p := l.procs[i]
		if p.Process != nil {
			p.Process.Kill()
			p.Wait()
		}
	}
	exec.Command("ip", "netns", "del", l.ns).Run()
}

// boot starts the VM and waits until the boot events show it fetched its
// kernel, returning the events.
func (l *pxeLab) boot(qemuArgs []string, timeout time.Duration) []events.Event {
	l.t.Helper()
	args := append([]string{"-m", "256", "-smp", "1", "-display", "none", "-no-reboot", "-monitor", "none",
		"-serial", "file:" + filepath.Join(l.dir, "serial.log"), "-accel", "tcg",
		"-netdev", "tap,id=n0,ifname=" + l.tap + ",script=no,downscript=no"}, qemuArgs...)
	qemu := l.start("qemu-system-x86_64", args...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var evs []events.Event
	for ctx.Err() == nil {
		if b, err := l.curl("/events?mac=" + pxeMAC); err == nil {
			evs = nil
			json.Unmarshal(b, &evs)
			for _, e := range evs {
				if e.Source == "http" && e.Step == "asset" && e.File == "/assets/vmlinuz-pxe-test" {
					qemu.Process.Kill()
					return evs
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	l.t.Fatalf("the VM did not fetch its kernel within %v; events so far: %+v\n%s\n%s", timeout, evs, l.tail("serial.log"), l.tail("kindling.log"))
	return nil
}

// steps lists source/step (and file for TFTP) in order, dropping repeats
// of the same step in a row (firmware retries DHCP).
func steps(evs []events.Event) []string {
	var out []string
	for _, e := range evs {
		s := e.Source + ":" + e.Step
		if e.Source == "tftp" || e.Step == "asset" {
			s += ":" + filepath.Base(e.File)
		}
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

// inOrder reports whether want appears in got as a subsequence.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestPXEBootBIOS: SeaBIOS runs the NIC's iPXE ROM, which asks Kindling's
// DHCP server, is sent straight to /boot.ipxe (user class iPXE), chains to
// /ipxe and fetches the kernel its profile names.
func TestPXEBootBIOS(t *testing.T) {
	l := newPXELab(t, "server")
	evs := l.boot([]string{"-machine", "pc,graphics=off",
		"-device", "virtio-net-pci,netdev=n0,mac=" + pxeMAC + ",bootindex=1"}, 120*time.Second)
	got := steps(evs)
	want := []string{"dhcp:offer", "dhcp:ack", "http:boot.ipxe", "http:ipxe", "http:asset:vmlinuz-pxe-test"}
	if !inOrder(got, want) {
		t.Errorf("BIOS boot steps = %v, want in order %v", got, want)
	}
	t.Logf("BIOS boot steps: %v", got)
}

// TestPXEBootUEFI: OVMF's own PXE client (no iPXE option ROM) asks
// Kindling's DHCP, fetches snponly.efi/ipxe.efi over Kindling's TFTP; that
// iPXE asks DHCP again, gets /boot.ipxe, and fetches the kernel.
func TestPXEBootUEFI(t *testing.T) {
	code := "/usr/share/OVMF/OVMF_CODE_4M.fd"
	if _, err := os.Stat(code); err != nil {
		t.Skipf("%s missing (Debian package ovmf; .ci/run installs it)", code)
	}
	l := newPXELab(t, "server")
	vars := filepath.Join(l.dir, "vars.fd")
	b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
	if err != nil {
		t.Skipf("OVMF vars: %v", err)
	}
	if err := os.WriteFile(vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	evs := l.boot([]string{"-machine", "q35",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-device", "virtio-net-pci,netdev=n0,mac=" + pxeMAC + ",romfile=,bootindex=1"}, 180*time.Second)
	got := steps(evs)
	var tftp string
	for _, s := range got {
		if strings.HasPrefix(s, "tftp:transfer:") {
			tftp = s
		}
	}
	if tftp == "" {
		t.Errorf("UEFI boot steps = %v: no TFTP transfer of iPXE", got)
	}
	want := []string{"dhcp:offer", "dhcp:ack", tftp, "http:boot.ipxe", "http:ipxe", "http:asset:vmlinuz-pxe-test"}
	if !inOrder(got, want) {
		t.Errorf("UEFI boot steps = %v, want in order %v", got, want)
	}
	t.Logf("UEFI boot steps: %v", got)
}

// TestPXEBootProxy: the network already has a DHCP server (dnsmasq, with
// no PXE configuration); Kindling runs as proxyDHCP and only adds the boot
// file. The iPXE ROM takes its address from one and /boot.ipxe from the
// other.
func TestPXEBootProxy(t *testing.T) {
	l := newPXELab(t, "proxy")
	evs := l.boot([]string{"-machine", "pc,graphics=off",
		"-device", "virtio-net-pci,netdev=n0,mac=" + pxeMAC + ",bootindex=1"}, 120*time.Second)
	got := steps(evs)
	want := []string{"dhcp:proxy-offer", "http:boot.ipxe", "http:ipxe", "http:asset:vmlinuz-pxe-test"}
	if !inOrder(got, want) {
		t.Errorf("proxy boot steps = %v, want in order %v", got, want)
	}
	for _, e := range evs {
		if e.Source == "dhcp" && (e.Step == "offer" || e.Step == "ack") {
			t.Errorf("proxy mode handed out an address: %+v", e)
		}
	}
	t.Logf("proxy boot steps: %v", got)
}
