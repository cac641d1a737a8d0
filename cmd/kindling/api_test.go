package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/api/certs"
	"github.com/kindlingboot/kindling/matchbox/api/client/clienttest"
	"github.com/kindlingboot/kindling/profiles"
)

// apiEnv is the environment that points the CLI at srv with its client
// certificate.
func apiEnv(srv *clienttest.Server) map[string]string {
	return map[string]string{
		"KINDLING_ENDPOINT":  srv.Endpoint,
		"KINDLING_CA_FILE":   filepath.Join(srv.Dir, certs.CACert),
		"KINDLING_CERT_FILE": filepath.Join(srv.Dir, certs.ClientCert),
		"KINDLING_KEY_FILE":  filepath.Join(srv.Dir, certs.ClientKey),
	}
}

// kindlingOK runs the CLI and fails the test unless it exits 0.
func kindlingOK(t *testing.T, env map[string]string, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := kindling(t, env, stdin, args...)
	if code != 0 {
		t.Fatalf("kindling %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestAPICommands(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	env := apiEnv(srv)
	dir := t.TempDir()

	if out := kindlingOK(t, env, "", "group", "list"); out != "ID  NAME  PROFILE  SELECTOR\n" {
		t.Errorf("group list on an empty server = %q; want just the header", out)
	}
	if out := kindlingOK(t, env, "", "group", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("group list -o json on an empty server = %q; want []", out)
	}

	g := mustWrite(t, dir, "web.json", `{"id": "web1", "name": "Web one", "profile": "worker",
		"selector": {"mac": "52:54:00:A1:9C:AE", "os": ["installed", "rescue"]},
		"metadata": {"big": 12345678901234567890, "ssh": ["k1"]}}`)
	out := kindlingOK(t, env, "", "group", "put", "-f", g)
	if want := "ID    NAME     PROFILE  SELECTOR\nweb1  Web one  worker   mac=52:54:00:a1:9c:ae,os=installed|rescue\n"; out != want {
		t.Errorf("group put -f web.json printed\n%s\nwant\n%s", out, want)
	}
	// The id from the argument, the object from stdin; flags after it.
	kindlingOK(t, env, `{"profile": "worker"}`, "group", "put", "default", "-o", "json")
	out = kindlingOK(t, env, "", "group", "list")
	want := "ID       NAME     PROFILE  SELECTOR\n" +
		"default  -        worker   -\n" +
		"web1     Web one  worker   mac=52:54:00:a1:9c:ae,os=installed|rescue\n"
	if out != want {
		t.Errorf("group list printed\n%s\nwant\n%s", out, want)
	}
	out = kindlingOK(t, env, "", "group", "get", "web1", "-o", "json")
	var got groups.Group
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil || got.ID != "web1" || got.Metadata["big"] != json.Number("12345678901234567890") {
		t.Errorf("group get web1 -o json = %q (decoded %+v, %v); want the group with exact metadata numbers", out, got, err)
	}
	if out := kindlingOK(t, env, "", "group", "get", "web1"); !strings.HasPrefix(out, "ID    NAME") || strings.Count(out, "\n") != 2 {
		t.Errorf("group get web1 printed %q; want a header and one row", out)
	}

	p := mustWrite(t, dir, "worker.json", `{"id":"worker","boot":{"kernel":"/assets/vmlinuz","initrd":["/assets/initrd.img"],"args":["console=ttyS0"]},"ignition_id":"worker.yaml"}`)
	kindlingOK(t, env, "", "profile", "put", "worker", "-f", p)
	kindlingOK(t, env, `{"id":"bare","name":"configs only","generic_id":"x.txt"}`, "profile", "put")
	out = kindlingOK(t, env, "", "profile", "list")
	want = "ID      NAME          KERNEL           IGNITION\n" +
		"bare    configs only  -                -\n" +
		"worker  -             /assets/vmlinuz  worker.yaml\n"
	if out != want {
		t.Errorf("profile list printed\n%s\nwant\n%s", out, want)
	}
	var ps []profiles.Profile
	if err := json.Unmarshal([]byte(kindlingOK(t, env, "", "profile", "list", "-o", "json")), &ps); err != nil || len(ps) != 2 || ps[1].Boot.Initrd[0] != "/assets/initrd.img" {
		t.Errorf("profile list -o json decoded to %+v, %v", ps, err)
	}

	bu := "variant: fcos\nversion: 1.5.0\n"
	ign := mustWrite(t, dir, "worker.yaml", bu)
	kindlingOK(t, env, "", "ignition", "put", "-f", ign) // name from the file
	kindlingOK(t, env, `{"ignition":{"version":"3.4.0"}}`, "ignition", "put", "raw.ign")
	kindlingOK(t, env, "#!/bin/sh\n", "generic", "put", "x.txt", "-f", "-")
	if out := kindlingOK(t, env, "", "ignition", "list"); out != "NAME\nraw.ign\nworker.yaml\n" {
		t.Errorf("ignition list = %q", out)
	}
	if out := kindlingOK(t, env, "", "ignition", "list", "-o", "json"); strings.Join(strings.Fields(out), "") != `["raw.ign","worker.yaml"]` {
		t.Errorf("ignition list -o json = %q", out)
	}
	if out := kindlingOK(t, env, "", "ignition", "get", "worker.yaml"); out != bu {
		t.Errorf("ignition get worker.yaml = %q, want the file as stored %q", out, bu)
	}
	if out := kindlingOK(t, env, "", "generic", "get", "x.txt", "-o", "json"); out != "#!/bin/sh\n" {
		t.Errorf("generic get x.txt = %q", out)
	}

	// Remote select, against what was just stored.
	out = kindlingOK(t, env, "", "select", "mac=52-54-00-a1-9c-ae", "os=rescue")
	for _, w := range []string{"group:   web1\n", "profile: worker\n", "kernel:  /assets/vmlinuz\n", "initrd:  /assets/initrd.img\n", "args:    console=ttyS0\n", "ignition: ignition/worker.yaml\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("select (remote) output lacks %q:\n%s", w, out)
		}
	}
	out = kindlingOK(t, env, "", "select", "-o", "json", "mac=52:54:00:00:00:09")
	var sel struct{ Group, Profile struct{ ID string } }
	if err := json.Unmarshal([]byte(out), &sel); err != nil || sel.Group.ID != "default" || sel.Profile.ID != "worker" {
		t.Errorf("select -o json = %q (%+v, %v); want the default group", out, sel, err)
	}

	kindlingOK(t, env, "", "group", "delete", "web1", "default", "never-existed")
	kindlingOK(t, env, "", "ignition", "delete", "worker.yaml")
	if out := kindlingOK(t, env, "", "group", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("group list after deleting all = %q", out)
	}
	out, errOut, code := kindling(t, env, "", "select", "mac=52:54:00:00:00:09")
	if code != 1 || !strings.Contains(out, "result: no group matches") {
		t.Errorf("select with no groups: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestAPIErrors(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	env := apiEnv(srv)
	dir := t.TempDir()
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	noCert := apiEnv(srv)
	delete(noCert, "KINDLING_CERT_FILE")
	delete(noCert, "KINDLING_KEY_FILE")
	bad := mustWrite(t, dir, "bad.json", `{"id":"x","profile":"p","selectors":{"mac":"52:54:00:00:00:01"}}`)
	syntax := mustWrite(t, dir, "syntax.json", "{\n\"id\": \"x\",\n}")
	db := mustWrite(t, dir, "db.json", `{"id":"db","profile":"p"}`)
	badMAC := mustWrite(t, dir, "badmac.json", `{"id":"m","profile":"p","selector":{"mac":"nope"}}`)

	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		code  int
		want  string // the error line (stderr), or a prefix of it ending in "…"
	}{
		{"refused", map[string]string{"KINDLING_ENDPOINT": closed}, "", []string{"group", "list"}, 1,
			"group list: connecting to " + closed + ": connection refused (after 3 attempts)"},
		{"not found", env, "", []string{"group", "get", "nope"}, 1, "group get: nope: not found: group nope not found"},
		{"ignition not found", env, "", []string{"ignition", "get", "nope.ign"}, 1, "ignition get: nope.ign: not found: ignition/nope.ign not found"},
		{"no client certificate", noCert, "", []string{"profile", "list"}, 1,
			"profile list: connecting to " + srv.Endpoint + ": unauthenticated: the server requires a client certificate (remote error: tls: certificate required)"},
		{"invalid on the server", env, "", []string{"group", "put", "-f", badMAC}, 1, `group put: m: invalid argument: group m: field "selector.mac": bad label: mac "nope" is not a MAC address…`},
		{"unknown field", env, "", []string{"group", "put", "-f", bad}, 1, "group put: " + bad + `: unknown field "selectors" (valid fields: id, name, profile, selector, metadata)`},
		{"bad JSON", env, "", []string{"group", "put", "-f", syntax}, 1, "group put: " + syntax + ": line 3, column 1: invalid JSON…"},
		{"empty stdin", env, "", []string{"profile", "put", "p"}, 1, "profile put: standard input is empty; want the profile as a JSON object"},
		{"missing file", env, "", []string{"group", "put", "-f", filepath.Join(dir, "nope.json")}, 1, "group put: reading " + filepath.Join(dir, "nope.json") + ": open …"},

		{"no endpoint", nil, "", []string{"group", "list"}, 2, "no server: give -endpoint HOST:PORT (or set KINDLING_ENDPOINT)…"},
		{"endpoint without port", map[string]string{"KINDLING_ENDPOINT": "10.0.0.1"}, "", []string{"group", "list"}, 2, `-endpoint "10.0.0.1": no port…`},
		{"bad -o", env, "", []string{"group", "list", "-o", "yaml"}, 2, `-o "yaml": want table or json`},
		{"unknown flag", env, "", []string{"group", "list", "-frob"}, 2, "flag provided but not defined: -frob"},
		{"no verb", env, "", []string{"profile"}, 2, "profile: give a command: list, get, put or delete"},
		{"unknown verb", env, "", []string{"group", "show"}, 2, `group: unknown command "show": want list, get, put or delete`},
		{"get without id", env, "", []string{"group", "get"}, 2, `group get takes one ID, got 0: []`},
		{"list with an argument", env, "", []string{"ignition", "list", "x"}, 2, `ignition list takes no arguments, got 1: ["x"]`},
		{"ids disagree", env, "", []string{"group", "put", "web", "-f", db}, 2, `group put: the argument says "web" but ` + db + ` has "id": "db"; make them agree (or drop one)`},
		{"no id at all", env, `{"profile":"p"}`, []string{"group", "put"}, 2, `group put: standard input has no "id": give it in the file or as the argument`},
		{"ignition from stdin without a name", env, "x", []string{"ignition", "put"}, 2, "ignition put: give the NAME to store it as: kindling ignition put NAME -f FILE"},
		{"select: both sources", env, "", []string{"select", "-data-path", dir, "mac=52:54:00:00:00:01"}, 2, "select: give -endpoint (ask a server) or -data-path (read a directory here), not both"},
	} {
		out, errOut, code := kindling(t, tc.env, tc.stdin, tc.args...)
		line := errOut
		if code == 2 {
			// Usage errors may print the usage first; the error is last.
			line = errOut[strings.LastIndex(errOut, "\n")+1:]
		}
		match := line == tc.want
		if p, isPrefix := strings.CutSuffix(tc.want, "…"); isPrefix {
			match = strings.HasPrefix(line, p)
		}
		if code != tc.code || !match || (code == 1 && strings.Contains(errOut, "\n")) || out != "" {
			t.Errorf("%s: kindling %s: exit %d, stdout %q\nstderr %q\nwant exit %d and the one line %q", tc.name, strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.want)
		}
	}
	// Nothing was stored by the failures.
	if out := kindlingOK(t, env, "", "group", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("after failed puts, group list = %q", out)
	}
	// -h is not an error.
	if _, _, code := kindling(t, nil, "", "group", "put", "-h"); code != 0 {
		t.Errorf("group put -h: exit %d, want 0", code)
	}
}

func TestAPIDefaultsAndToken(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{Token: "s3cret"})
	home := t.TempDir()
	conf := filepath.Join(home, ".config", "kindling")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certs.CACert, certs.ClientCert, certs.ClientKey} {
		b, err := os.ReadFile(filepath.Join(srv.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, conf, f, string(b))
	}
	// Certificates from ~/.config/kindling, flags after the arguments.
	env := map[string]string{"HOME": home}
	kindlingOK(t, env, `{"id":"a","profile":"p"}`, "group", "put", "-endpoint", srv.Endpoint)
	if out := kindlingOK(t, env, "", "group", "list", "-endpoint", srv.Endpoint); !strings.Contains(out, "\na ") {
		t.Errorf("group list with default certificates = %q", out)
	}

	// No certificate at all, but the token.
	tokenFile := mustWrite(t, t.TempDir(), "token", "s3cret\n")
	ca := filepath.Join(srv.Dir, certs.CACert)
	if out := kindlingOK(t, nil, "", "group", "list", "-endpoint", srv.Endpoint, "-ca-file", ca, "-token-file", tokenFile); !strings.Contains(out, "\na ") {
		t.Errorf("group list with a token = %q", out)
	}
	wrong := mustWrite(t, t.TempDir(), "token", "guess")
	_, errOut, code := kindling(t, nil, "", "group", "list", "-endpoint", srv.Endpoint, "-ca-file", ca, "-token-file", wrong)
	if code != 1 || errOut != "group list: unauthenticated: client certificate or bearer token required" {
		t.Errorf("group list with a wrong token: exit %d, stderr %q", code, errOut)
	}
	empty := mustWrite(t, t.TempDir(), "token", "\n")
	if _, errOut, code := kindling(t, nil, "", "group", "list", "-endpoint", srv.Endpoint, "-token-file", empty); code != 1 || !strings.Contains(errOut, "empty; want the token") {
		t.Errorf("group list with an empty token file: exit %d, stderr %q", code, errOut)
	}
	// Without the CA the server is not trusted: one line saying so.
	_, errOut, code = kindling(t, nil, "", "group", "list", "-endpoint", srv.Endpoint, "-token-file", tokenFile)
	if code != 1 || !strings.Contains(errOut, "x509: certificate signed by unknown authority") || strings.Contains(errOut, "\n") {
		t.Errorf("group list without the CA: exit %d, stderr %q", code, errOut)
	}
}

// TestAPIRealServer drives the CLI against a real Kindling server run in
// process (matchbox.Run with a control plane on 127.0.0.1), with
// certificates made by `kindling certs init`, and checks that machines
// see each write.
func TestAPIRealServer(t *testing.T) {
	tlsDir := filepath.Join(t.TempDir(), "tls")
	kindlingOK(t, nil, "", "certs", "init", tlsDir, "-server-name", "localhost", "-ip", "127.0.0.1")
	data := t.TempDir()
	for _, d := range []string{"groups", "profiles", "ignition", "generic"} {
		if err := os.Mkdir(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- matchbox.Run(ctx, matchbox.Config{
			Listener:    web,
			DataPath:    data,
			NoWatch:     true,
			RPCListener: rpc,
			CertFile:    filepath.Join(tlsDir, "server.crt"),
			KeyFile:     filepath.Join(tlsDir, "server.key"),
			CAFile:      filepath.Join(tlsDir, "ca.crt"),
			RPCReady:    func(net.Addr) { close(ready) },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("matchbox.Run = %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("matchbox.Run did not return within 20s of cancel")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("matchbox.Run = %v before the control plane was ready", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the control plane was not ready within 20s")
	}
	env := map[string]string{
		"KINDLING_ENDPOINT":  rpc.Addr().String(),
		"KINDLING_CA_FILE":   filepath.Join(tlsDir, "ca.crt"),
		"KINDLING_CERT_FILE": filepath.Join(tlsDir, "client.crt"),
		"KINDLING_KEY_FILE":  filepath.Join(tlsDir, "client.key"),
	}
	machine := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + web.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const mac = "52:54:00:a1:9c:ae"

	if out := kindlingOK(t, env, "", "group", "list"); out != "ID  NAME  PROFILE  SELECTOR\n" {
		t.Errorf("group list on an empty data directory = %q", out)
	}
	kindlingOK(t, env, `{"id":"worker","boot":{"kernel":"/assets/vmlinuz","initrd":["/assets/initrd.img"],"args":["console=ttyS0"]},"ignition_id":"worker.yaml"}`, "profile", "put")
	kindlingOK(t, env, "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n", "ignition", "put", "worker.yaml")
	out := kindlingOK(t, env, `{"profile":"worker","selector":{"mac":"52-54-00-A1-9C-AE"},"metadata":{"hostname":"node1","n":12345678901234567890}}`, "group", "put", "node1")
	if want := "ID     NAME  PROFILE  SELECTOR\nnode1  -     worker   mac=" + mac + "\n"; out != want {
		t.Errorf("group put node1 printed\n%s\nwant\n%s", out, want)
	}
	if _, err := os.Stat(filepath.Join(data, "groups", "node1.json")); err != nil {
		t.Errorf("group put did not write groups/node1.json: %v", err)
	}
	if out := kindlingOK(t, env, "", "profile", "list"); !strings.Contains(out, "worker  -     /assets/vmlinuz  worker.yaml") {
		t.Errorf("profile list = %q", out)
	}
	if out := kindlingOK(t, env, "", "ignition", "list"); out != "NAME\nworker.yaml\n" {
		t.Errorf("ignition list = %q", out)
	}
	out = kindlingOK(t, env, "", "group", "get", "node1", "-o", "json")
	if !strings.Contains(out, `"n": 12345678901234567890`) || !strings.Contains(out, `"mac": "`+mac+`"`) {
		t.Errorf("group get node1 -o json = %s", out)
	}
	// Machines see the writes at once.
	if code, body := machine("/ipxe?mac=" + mac); code != 200 || !strings.Contains(body, "/assets/vmlinuz") {
		t.Errorf("GET /ipxe for node1 after the puts = %d %q", code, body)
	}
	if code, body := machine("/ignition?mac=" + mac); code != 200 || !strings.Contains(body, "node1") {
		t.Errorf("GET /ignition for node1 after the puts = %d %q", code, body)
	}
	out = kindlingOK(t, env, "", "select", "mac="+mac)
	if !strings.Contains(out, "group:   node1\n") || !strings.Contains(out, "ignition: ignition/worker.yaml\n") {
		t.Errorf("select (remote, real server) = %q", out)
	}

	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		want  string // prefix of the one error line
	}{
		{"missing group", env, "", []string{"group", "get", "nope"}, "group get: nope: not found: "},
		{"missing ignition", env, "", []string{"ignition", "get", "nope.ign"}, "ignition get: nope.ign: not found: "},
		{"bad MAC", env, `{"profile":"worker","selector":{"mac":"nope"}}`, []string{"group", "put", "bad"}, "group put: bad: invalid argument: "},
		{"bad Butane", env, "variant: fcos\nversion: 9.9.9\n", []string{"ignition", "put", "bad.yaml"}, "ignition put: bad.yaml: invalid argument: "},
		{"no client certificate", map[string]string{"KINDLING_ENDPOINT": rpc.Addr().String(), "KINDLING_CA_FILE": env["KINDLING_CA_FILE"]}, "", []string{"group", "list"},
			"group list: connecting to " + rpc.Addr().String() + ": unauthenticated: the server requires a client certificate"},
	} {
		out, errOut, code := kindling(t, tc.env, tc.stdin, tc.args...)
		if code != 1 || !strings.HasPrefix(errOut, tc.want) || strings.Contains(errOut, "\n") || out != "" || strings.Contains(errOut, data) {
			t.Errorf("%s: kindling %s: exit %d, stdout %q, stderr %q; want exit 1 and one line starting %q (no server path)", tc.name, strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}

	kindlingOK(t, env, "", "group", "delete", "node1")
	kindlingOK(t, env, "", "group", "delete", "node1") // again: still fine
	if code, _ := machine("/ipxe?mac=" + mac); code != 404 {
		t.Errorf("GET /ipxe for node1 after group delete = %d, want 404", code)
	}
	if _, err := os.Stat(filepath.Join(data, "groups", "node1.json")); !os.IsNotExist(err) {
		t.Errorf("group delete left groups/node1.json (stat: %v)", err)
	}
	kindlingOK(t, env, "", "ignition", "delete", "worker.yaml")
	kindlingOK(t, env, "", "profile", "delete", "worker")
	for _, kind := range []string{"group", "profile", "ignition"} {
		if out := kindlingOK(t, env, "", kind, "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
			t.Errorf("%s list after deleting everything = %q", kind, out)
		}
	}
}
