package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFinish(t *testing.T) {
	for _, tc := range []struct {
		action, onFailure string
		want              string // "" for valid
	}{
		{"reboot", "wait", ""},
		{"poweroff", "poweroff", ""},
		{"switchroot", "shell", ""},
		{"reboto", "wait", `kindling.finish="reboto"`},
		{"reboot", "halt", `kindling.finish.failure="halt"`},
		{"wait", "wait", `kindling.finish=wait`},
		{"reboot", "switchroot", `kindling.finish.failure=switchroot`},
	} {
		err := checkFinish(tc.action, tc.onFailure)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkFinish(%q, %q) = %v, want %q", tc.action, tc.onFailure, err, tc.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.ign")
	good := filepath.Join(dir, "good.ign")
	os.WriteFile(bad, []byte(`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"rel"}]}}`), 0o644)
	os.WriteFile(good, []byte(`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}`), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"ignite"}, 2, ""},
		{[]string{"ignite", "frobnicate"}, 2, ""},
		{[]string{"ignite", "validate", bad}, 2, "path not absolute"},
		{[]string{"ignite", "validate", good}, 0, ""},
		{[]string{"ignite", "apply", "-config", bad, "-root", t.TempDir()}, 2, ""},
		{[]string{"ignite", "apply", "-config", good, "-root", t.TempDir()}, 0, "succeeded"},
		{[]string{"ignite", "plan", "-config", good, "-root", t.TempDir()}, 0, "write    /etc/motd"},
		{[]string{"ignite", "plan", "-config", good, "-root", dir, "-o", "yaml"}, 2, ""},
		{[]string{"ignite", "run", "-config", good, "-root", t.TempDir()}, 0, "not the first boot"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, os.Getenv, &stdout, &stderr)
		code := 0
		if err != nil {
			code = exitCode(err)
		}
		if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.out) {
			t.Errorf("%v: exit %d, output %q; want exit %d and %q", tc.args, code, stdout.String()+stderr.String(), tc.code, tc.out)
		}
	}
}
