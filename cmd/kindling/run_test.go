package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kindling runs the CLI in-process and returns its output and exit code.
func kindling(t *testing.T, env map[string]string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errb)
	if err != nil {
		code = exitCode(err)
		if !errors.Is(err, errSilent) {
			errb.WriteString(err.Error())
		}
	}
	return out.String(), errb.String(), code
}

func TestVersionAndUsage(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"version"}} {
		if out, _, code := kindling(t, nil, "", args...); code != 0 || !strings.HasPrefix(out, "kindling ") {
			t.Errorf("kindling %v = %q, exit %d", args, out, code)
		}
	}
	if _, errOut, code := kindling(t, nil, "", "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	if _, _, code := kindling(t, nil, "", "serve", "-h"); code != 0 {
		t.Errorf("serve -h: exit %d, want 0", code)
	}
	if _, errOut, code := kindling(t, nil, "", "serve", "-dhcp", "proxy", "-dhcp-interface", "lo"); code != 2 || !strings.Contains(errOut, "machines could not reach the HTTP server") {
		t.Errorf("-dhcp with the default loopback -address: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := kindling(t, nil, "", "serve", "-address", "0.0.0.0:0", "-dhcp", "server", "-dhcp-interface", "lo", "-dhcp-range", "10.0.0.9"); code != 2 || !strings.Contains(errOut, "want START-END") {
		t.Errorf("-dhcp-range without an end: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := kindling(t, nil, "", "serve", "-address", "0.0.0.0:0", "-dhcp", "relay", "-dhcp-interface", "lo"); code != 2 || !strings.Contains(errOut, "want proxy or server") {
		t.Errorf("-dhcp relay: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := kindling(t, nil, "", "serve", "-log-level", "loud"); code != 2 || !strings.Contains(errOut, "want debug, info, warn or error") {
		t.Errorf("bad -log-level: exit %d, stderr %q", code, errOut)
	}
}

func TestValidate(t *testing.T) {
	for _, ex := range []string{"default", "flatcar-install", "custom-scripts"} {
		dir := filepath.Join("..", "..", "examples", ex)
		if out, errOut, code := kindling(t, nil, "", "validate", dir); code != 0 || !strings.Contains(out, ": ok (") {
			t.Errorf("validate %s: exit %d\n%s%s", ex, code, out, errOut)
		}
	}
	dir := t.TempDir()
	mustWrite(t, dir, "profiles/p.json", `{"id":"p","ignition_id":"p.yaml"}`)
	mustWrite(t, dir, "ignition/p.yaml", "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/{{.name}}\n")
	mustWrite(t, dir, "groups/a.json", `{"id":"a","profile":"p","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"name":"ok"}}`)
	mustWrite(t, dir, "groups/b.json", `{"id":"b","profile":"p","selector":{"mac":"52:54:00:00:00:02"},"metadata":{"name":"../../x y"}}`)
	mustWrite(t, dir, "groups/c.json", `{"id":"c","profile":"p","selector":{"mac":"52:54:00:00:00:03"}}`)
	out, _, code := kindling(t, nil, "", "validate", dir)
	if code != 1 {
		t.Errorf("validate of a bad directory: exit %d, want 1\n%s", code, out)
	}
	// b renders an invalid config only for its own metadata: validate
	// renders every group; c lacks .name, which may be a label at request
	// time, so it is a warning.
	for _, want := range []string{"error: " + filepath.Join(dir, "groups/b.json"), "warning: " + filepath.Join(dir, "groups/c.json"), "1 problem(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	mustWrite(t, dir, "groups/d.json", `{"id":"d","profile":"p","selectors":{}}`)
	mustWrite(t, dir, "groups/e.json", `{"id":"e","profile":"q"}`)
	out, _, code = kindling(t, nil, "", "validate", dir)
	for _, want := range []string{`groups/d.json: unknown field "selectors"`, `groups/e.json: field "profile": no profile "q"`, "2 problem(s)"} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("validate: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
}

func TestSelectExplains(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "flatcar-install")
	out, _, code := kindling(t, nil, "", "select", "-data-path", dir, "mac=52-54-00-A1-9C-AE")
	if code != 0 {
		t.Fatalf("select: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"labels: mac=52:54:00:a1:9c:ae",
		"group:   install (groups/install.json)",
		"profile: flatcar-install",
		"kernel:  /assets/flatcar/current/flatcar_production_pxe.vmlinuz",
		`✗  node1    mac=52:54:00:a1:9c:ae,os=installed`,
		`selector os=installed: label "os" is absent`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("select output lacks %q:\n%s", want, out)
		}
	}
	env := map[string]string{"KINDLING_DATA_PATH": dir}
	out, _, code = kindling(t, env, "", "select", "mac=52:54:00:00:00:99")
	if code != 1 || !strings.Contains(out, "no group matches") || !strings.Contains(out, `selector mac=`) {
		t.Errorf("select with no match (data path from env): exit %d\n%s", code, out)
	}
	if _, errOut, code := kindling(t, nil, "", "select", "mac=nope"); code != 1 || !strings.Contains(errOut, `"nope" is not a MAC address`) {
		t.Errorf("select mac=nope: exit %d, stderr %q", code, errOut)
	}
}

func TestButane(t *testing.T) {
	dir := t.TempDir()
	src := "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        inline: hi\n"
	out, errOut, code := kindling(t, nil, src, "butane")
	if code != 0 || !strings.Contains(out, `"version":"3.5.0"`) {
		t.Errorf("butane from stdin: exit %d, out %q, err %q", code, out, errOut)
	}
	in := mustWrite(t, dir, "in.bu", src)
	dst := filepath.Join(dir, "out.ign")
	mustWrite(t, dir, "out.ign", "previous")
	if _, errOut, code := kindling(t, nil, "", "butane", "-pretty", "-o", dst, in); code != 0 {
		t.Fatalf("butane -o: exit %d %s", code, errOut)
	}
	if b, _ := os.ReadFile(dst); !strings.Contains(string(b), "\n  \"ignition\"") {
		t.Errorf("butane -pretty -o wrote %q", b)
	}
	bad := mustWrite(t, dir, "bad.bu", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: etc/motd\n")
	_, errOut, code = kindling(t, nil, "", "butane", "-o", dst, bad)
	if code != 1 || !strings.Contains(errOut, "bad.bu") || !strings.Contains(errOut, "path not absolute") {
		t.Errorf("butane of a bad file: exit %d, stderr %q", code, errOut)
	}
	if b, _ := os.ReadFile(dst); !strings.Contains(string(b), "ignition") {
		t.Errorf("failed butane run changed the existing output file: %q", b)
	}
	local := mustWrite(t, dir, "local.bu", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/x\n      contents:\n        local: in.bu\n")
	if _, errOut, code := kindling(t, nil, "", "butane", "-files-dir", dir, local); code != 0 {
		t.Errorf("butane -files-dir: exit %d %s", code, errOut)
	}
	// Butane warns about a mode without the leading 0 read as decimal.
	warn := mustWrite(t, dir, "warn.bu", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/x\n      mode: 644\n")
	if _, errOut, code := kindling(t, nil, "", "butane", "-strict", warn); code != 1 || !strings.Contains(errOut, "strict") {
		t.Errorf("butane -strict on a warning: exit %d, stderr %q", code, errOut)
	}
}

// TestServeEmbeddedDefault runs `kindling serve` as the README's quick
// start does, on a free loopback port, and checks the embedded default is
// served and is safe: a machine not listed by MAC is not installed.
func TestServeEmbeddedDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-log-level", "error"}, func(k string) string {
			return map[string]string{"KINDLING_ADDRESS": addr}[k]
		}, nil, io.Discard, io.Discard)
	}()
	base := "http://" + addr
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/ipxe?mac=52:54:00:12:34:56&uuid=x")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kindling serve did not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(body, "fedora-coreos-live-kernel") || strings.Contains(body, "coreos.inst.install_dev") {
		t.Errorf("embedded default for an unknown machine:\n%s\nwant the live profile, no installer", body)
	}
	resp, err := http.Get(base + "/ipxe?mac=52:54:00:a1:9c:ae")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "coreos.inst.install_dev=/dev/vda") || !strings.Contains(string(b), "http://"+addr+"/ignition") {
		t.Errorf("embedded default for node1's MAC:\n%s\nwant the installer pointing back at %s", b, addr)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("serve did not stop")
	}
}

func mustWrite(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
