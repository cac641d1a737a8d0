package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	igniteOnce sync.Once
	igniteBin  string
	igniteErr  error
)

// buildIgnite builds the agent once per test binary, as CI ships it.
func buildIgnite(t *testing.T) string {
	t.Helper()
	igniteOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kindling-ignite-")
		if err != nil {
			igniteErr = err
			return
		}
		igniteBin = filepath.Join(dir, "ignite")
		cmd := exec.Command("go", "build", "-o", igniteBin, "./cmd/ignite")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			igniteErr = errors.New(string(out))
		}
	})
	if igniteErr != nil {
		t.Fatalf("building ignite: %v", igniteErr)
	}
	return igniteBin
}

// agentData is a data directory whose Butane config provisions a machine
// with files, a user and units; its bad group's config has a wrong hash.
var agentData = map[string]string{
	"profiles/node.json": `{"id": "node", "boot": {"kernel": "/assets/k"}, "ignition_id": "node.yaml"}`,
	"profiles/bad.json":  `{"id": "bad", "boot": {"kernel": "/assets/k"}, "ignition_id": "bad.ign"}`,
	"groups/node1.json":  `{"id": "node1", "profile": "node", "selector": {"mac": "52:54:00:00:00:01"}, "metadata": {"hostname": "node1"}}`,
	"groups/bad.json":    `{"id": "bad", "profile": "bad", "selector": {"mac": "52:54:00:00:00:02"}}`,
	"ignition/node.yaml": `variant: fcos
version: 1.5.0
passwd:
  users:
    - name: core
      ssh_authorized_keys: [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKindlingTestKey core@test" ]
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: {{.hostname}}
    - path: /opt/bin/hello
      mode: 0755
      contents:
        inline: "#!/bin/sh\necho hello\n"
systemd:
  units:
    - name: hello.service
      enabled: true
      contents: |
        [Unit]
        Description=hello
        [Service]
        ExecStart=/opt/bin/hello
        [Install]
        WantedBy=multi-user.target
`,
	"ignition/bad.ign": `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hello","verification":{"hash":"sha512-00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}}}]}}`,
}

// TestAgentAgainstServer runs the real ignite binary against the real
// server: it fetches the machine's rendered config, applies it to a root
// directory, and reports; the server then serves the report.
func TestAgentAgainstServer(t *testing.T) {
	ignite := buildIgnite(t)
	base := serveDir(t, agentData)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\n")

	runIgnite := func(mac string, extra ...string) (int, string) {
		t.Helper()
		args := append([]string{"run", "-firstboot", "-root", root,
			"-config", base + "/ignition?mac=" + mac,
			"-report-url", base + "/report?mac=" + mac}, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, ignite, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String()
	}

	code, out := runIgnite("52:54:00:00:00:01")
	if code != 0 {
		t.Fatalf("ignite run = exit %d, want 0\n%s", code, out)
	}
	for path, want := range map[string]string{
		"etc/hostname":                              "node1",
		"opt/bin/hello":                             "#!/bin/sh\necho hello\n",
		"etc/systemd/system/hello.service":          "ExecStart=/opt/bin/hello",
		"home/core/.ssh/authorized_keys.d/ignition": "KindlingTestKey",
		"etc/passwd":                                "\ncore:*:1000:",
	} {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s = %q (%v), want it to contain %q", path, b, err, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/hello.service")); err != nil || !strings.HasSuffix(target, "hello.service") {
		t.Errorf("hello.service wants link = %q, %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/.ignition-result.json")); err != nil {
		t.Errorf("no result file: %v", err)
	}
	var got struct {
		Result string          `json:"result"`
		Body   json.RawMessage `json:"report"`
	}
	if err := json.Unmarshal([]byte(fetch(t, base+"/report?mac=52:54:00:00:00:01")), &got); err != nil || got.Result != "success" {
		t.Errorf("server's report = %+v (%v), want success", got, err)
	}
	if !strings.Contains(out, "KINDLING-REPORT {") {
		t.Errorf("console output lacks the report line:\n%s", out)
	}

	// A rerun on the provisioned root is a no-op that says so.
	code, out = runIgnite("52:54:00:00:00:01")
	if code != 0 || !strings.Contains(out, "already provisioned") {
		t.Errorf("rerun = exit %d, want 0 and 'already provisioned'\n%s", code, out)
	}

	// A bad hash fails the files stage, is reported, and writes nothing.
	bad := t.TempDir()
	before := snapshot(t, bad)
	cmd := exec.Command(ignite, "run", "-firstboot", "-root", bad,
		"-config", base+"/ignition?mac=52:54:00:00:00:02", "-report-url", base+"/report?mac=52:54:00:00:00:02")
	out2, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("ignite with a bad hash = %v, want exit 1\n%s", err, out2)
	}
	if after := snapshot(t, bad); after != before {
		t.Errorf("a failed run changed the root:\nbefore %s\nafter  %s", before, after)
	}
	var failed struct {
		Result, Stage, Error string
	}
	if err := json.Unmarshal([]byte(fetch(t, base+"/report?mac=52:54:00:00:00:02")), &failed); err != nil || failed.Result != "failure" || failed.Stage != "files" || !strings.Contains(failed.Error, "hash") {
		t.Errorf("server's report of the failure = %+v (%v), want failure in stage files naming the hash", failed, err)
	}
	if strings.Contains(string(out2), "data:,hello") {
		t.Errorf("the output leaks the resource's contents:\n%s", out2)
	}

	// A config URL that 404s is a fetch failure (exit 1); bad usage is exit 2.
	cmd = exec.Command(ignite, "run", "-firstboot", "-root", t.TempDir(), "-config", base+"/nothing-here")
	if err := cmd.Run(); err == nil || err.(*exec.ExitError).ExitCode() != 1 {
		t.Errorf("ignite run with a 404 config = %v, want exit 1", err)
	}
	cmd = exec.Command(ignite, "apply", "-root", t.TempDir())
	if err := cmd.Run(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
		t.Errorf("ignite apply without -config = %v, want exit 2", err)
	}
	badJSON := filepath.Join(t.TempDir(), "bad.ign")
	writeFile(t, badJSON, `{"ignition": {"version": "3.4.0"`)
	cmd = exec.Command(ignite, "apply", "-config", badJSON, "-root", t.TempDir())
	if out, err := cmd.CombinedOutput(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
		t.Errorf("ignite apply of an invalid config = %v, want exit 2\n%s", err, out)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot lists every path under dir with its mode and size.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %s %d\n", rel, fi.Mode(), fi.Size())
		return nil
	})
	return b.String()
}
