package ignition

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/ignition/boot"
	"github.com/kindlingboot/kindling/ignition/stages"
)

func TestRunOnlyOnFirstBoot(t *testing.T) {
	var out bytes.Buffer
	rep, err := Run(context.Background(), Config{Mode: ModeRun, Root: t.TempDir(), Source: "/nonexistent", Console: &out})
	if err != nil || rep.Result != ResultSkipped || !strings.Contains(rep.Reason, "not the first boot") {
		t.Errorf("Run without firstboot = %+v, %v; want skipped, not the first boot", rep, err)
	}
	if !strings.Contains(out.String(), "nothing to do") {
		t.Errorf("console = %q, want it to say there is nothing to do", out.String())
	}
}

func TestRunApplyAndRerun(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.ign")
	if err := os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Config{Mode: ModeApply, Root: root, Source: cfg})
	if err != nil || rep.Result != ResultSuccess {
		t.Fatalf("Run(apply) = %+v, %v; want success", rep, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/motd")); string(b) != "hi" {
		t.Errorf("/etc/motd = %q, want hi", b)
	}
	names := []string{}
	for _, s := range rep.Stages {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"fetch", "files", "report"}, names); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
	rep, err = Run(context.Background(), Config{Mode: ModeApply, Root: root, Source: cfg})
	if err != nil || rep.Result != ResultSkipped || !strings.Contains(rep.Reason, "already provisioned") {
		t.Errorf("rerun = %+v, %v; want skipped, already provisioned", rep, err)
	}
	// Forced, the stages run again: the file exists and overwrite is unset.
	if _, err = Run(context.Background(), Config{Mode: ModeApply, Root: root, Source: cfg, Force: true}); err == nil || !strings.Contains(err.Error(), "overwrite is false") {
		t.Errorf("forced rerun = %v, want the files stage to run and refuse to overwrite /etc/motd", err)
	}
}

func TestRunInvalidConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"2.2.0"}}`), 0o644)
	rep, err := Run(context.Background(), Config{Mode: ModeApply, Root: t.TempDir(), Source: cfg})
	if !errors.Is(err, ErrInvalidConfig) || rep.Result != ResultFailure || rep.Stage != "fetch" {
		t.Errorf("Run(2.2.0 config) = %+v, %v; want an ErrInvalidConfig failure in stage fetch", rep, err)
	}
}

func TestPlanTouchesNothing(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}`), 0o644)
	plan := &stages.Plan{}
	rep, err := Run(context.Background(), Config{Mode: ModePlan, Root: root, Source: cfg, Plan: plan})
	if err != nil || rep.Result != ResultSuccess {
		t.Fatalf("Run(plan) = %+v, %v", rep, err)
	}
	if len(plan.Actions) == 0 {
		t.Errorf("plan has no actions, want the write of /etc/motd")
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("plan wrote into the root: %v", ents)
	}
}

// TestConfigFromDevice reads the config named by ignition.config.device=
// and ignition.config.path= from a labelled filesystem on a loop device.
func TestConfigFromDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop device, mount)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "blkid", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (util-linux, e2fsprogs)", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "cfg.img")
	src := filepath.Join(dir, "config.ign")
	os.WriteFile(src, []byte(`{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/from-device","contents":{"source":"data:,yes"}}]}}`), 0o644)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	label := fmt.Sprintf("kcfg%d", os.Getpid()%100000)
	run("truncate", "-s", "8M", img)
	run("mkfs.ext4", "-q", "-F", "-L", label, img)
	run("debugfs", "-w", "-R", "write "+src+" config.ign", img)
	loop := run("losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

	root := t.TempDir()
	cl := boot.ParseCmdline("ignition.firstboot ignition.config.device=" + label + " ignition.config.path=/config.ign")
	rep, err := Run(context.Background(), Config{Mode: ModeApply, Root: root, Cmdline: cl})
	if err != nil || rep.Result != ResultSuccess {
		t.Fatalf("Run with the config on a device = %+v, %v", rep, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/from-device")); string(b) != "yes" {
		t.Errorf("/etc/from-device = %q, want yes", b)
	}
	if !strings.Contains(rep.Config, label) {
		t.Errorf("report's config = %q, want it to name the label %q", rep.Config, label)
	}
	// Only one of the pair is a usage error.
	cl = boot.ParseCmdline("ignition.config.device=" + label)
	if _, err := Run(context.Background(), Config{Mode: ModeApply, Root: t.TempDir(), Cmdline: cl}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("device without path = %v, want ErrInvalidConfig", err)
	}
}

// TestRerunDoesNotWipe: a second first-boot run of a config that wipes its
// root filesystem finds the result file on the disk before the disks
// stage, and leaves the filesystem alone.
func TestRerunDoesNotWipe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop device, mkfs, mount)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "blkid", "wipefs", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (util-linux, e2fsprogs, mount)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := exec.Command("truncate", "-s", "64M", img).Run(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.6.0"},"storage":{
		"filesystems":[{"device":"`+loop+`","format":"ext4","wipeFilesystem":true,"label":"rerun","path":"/"}],
		"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}`), 0o644)
	uuid := func() string {
		b, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", loop).Output()
		return strings.TrimSpace(string(b))
	}
	rep, err := Run(context.Background(), Config{Mode: ModeRun, Firstboot: true, Root: t.TempDir(), Source: cfg})
	if err != nil || rep.Result != ResultSuccess {
		t.Fatalf("first run = %+v, %v", rep, err)
	}
	first := uuid()
	rep, err = Run(context.Background(), Config{Mode: ModeRun, Firstboot: true, Root: t.TempDir(), Source: cfg})
	if err != nil || rep.Result != ResultSkipped || !strings.Contains(rep.Reason, loop) {
		t.Errorf("second run = %+v, %v; want skipped, naming %s", rep, err, loop)
	}
	if got := uuid(); got == "" || got != first {
		t.Errorf("filesystem UUID after the second run = %q, want %q (not remade)", got, first)
	}
	for _, s := range rep.Stages {
		if s.Name == "disks" {
			t.Errorf("the second run ran the disks stage: %+v", rep.Stages)
		}
	}
	// Headed for a switch into the root, a skipped run leaves it mounted.
	root := t.TempDir()
	rep, err = Run(context.Background(), Config{Mode: ModeRun, Firstboot: true, Root: root, Source: cfg, KeepRootMounted: true})
	if err != nil || rep.Result != ResultSkipped {
		t.Fatalf("third run (KeepRootMounted) = %+v, %v; want skipped", rep, err)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/motd"))
	exec.Command("umount", root).Run()
	if string(b) != "hi" {
		t.Errorf("with KeepRootMounted, %s/etc/motd = %q (%v), want the provisioned root mounted there", root, b, err)
	}
}

// TestConfigFetchGivesUp: a server that keeps failing ends the run with a
// reported failure instead of retrying forever.
func TestConfigFetchGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "template error", http.StatusInternalServerError)
	}))
	defer srv.Close()
	start := time.Now()
	rep, err := Run(context.Background(), Config{Mode: ModeApply, Root: t.TempDir(), Source: srv.URL + "/ignition", ConfigTimeout: time.Second})
	if err == nil || rep.Result != ResultFailure || rep.Stage != "fetch" || !strings.Contains(err.Error(), "gave up after 1s") || !strings.Contains(err.Error(), "500") {
		t.Errorf("Run against a failing server = %+v, %v; want a fetch failure that gave up after 1s naming the 500", rep, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %s, want about 1s", d)
	}
}

func TestReportBounded(t *testing.T) {
	r := &Report{Result: ResultFailure, Error: strings.Repeat("e", 10000)}
	for i := 0; i < 500; i++ {
		r.Warnings = append(r.Warnings, strings.Repeat("w", 300))
	}
	b := r.bounded()
	if len(b.Warnings) != 21 || len(b.Error) > 4200 || len(r.Warnings) != 500 {
		t.Errorf("bounded: %d warnings, %d bytes of error (original %d warnings); want 21, ≤ 4200, 500 untouched", len(b.Warnings), len(b.Error), len(r.Warnings))
	}
	small := &Report{Result: ResultSuccess}
	if small.bounded() != small {
		t.Errorf("a small report was copied")
	}
}

// TestUnfetchableSourceStopsBeforeDisks: a file whose source cannot be
// fetched fails the run in the fetch stage, before any disk stage.
func TestUnfetchableSourceStopsBeforeDisks(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.6.0"},"storage":{
		"disks":[{"device":"/dev/kindling-test-no-such-disk","wipeTable":true}],
		"files":[{"path":"/etc/x","contents":{"source":"s3://bucket/x"}}]}}`), 0o644)
	rep, err := Run(context.Background(), Config{Mode: ModeRun, Firstboot: true, Root: t.TempDir(), Source: cfg})
	if !errors.Is(err, ErrInvalidConfig) || rep.Stage != "fetch" || !strings.Contains(err.Error(), "storage.files[0].contents.source") {
		t.Errorf("Run = %+v, %v; want an invalid-config failure in stage fetch naming storage.files[0].contents.source", rep, err)
	}
	for _, s := range rep.Stages {
		if s.Name == "disks" {
			t.Errorf("the disks stage ran: %+v", rep.Stages)
		}
	}
}
