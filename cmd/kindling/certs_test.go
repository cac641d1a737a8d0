package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCertsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	out := kindlingOK(t, nil, "", "certs", "init", dir, "-server-name", "kindling.lan,localhost", "-ip", "127.0.0.1", "-ip", "fd00::1", "-days", "10")
	for _, w := range []string{"wrote " + filepath.Join(dir, "ca.crt") + ", ca.key, server.crt, server.key, client.crt, client.key\n", "-cert-file " + filepath.Join(dir, "server.crt")} {
		if !strings.Contains(out, w) {
			t.Errorf("certs init printed\n%s\nwant it to contain %q", out, w)
		}
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if !slices.Equal(leaf.DNSNames, []string{"kindling.lan", "localhost"}) || len(leaf.IPAddresses) != 2 || leaf.IPAddresses[0].String() != "127.0.0.1" || leaf.IPAddresses[1].String() != "fd00::1" {
		t.Errorf("server.crt SANs: DNS %q, IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore).Hours() / 24; d < 10 || d > 10.1 {
		t.Errorf("server.crt valid for %.2f days, want 10", d)
	}
	if fi, err := os.Stat(filepath.Join(dir, "client.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("client.key: %v, %v; want mode 0600", fi.Mode(), err)
	}

	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	_, errOut, code := kindling(t, nil, "", "certs", "init", dir, "-server-name", "localhost")
	if want := "certs init: " + dir + " already holds ca.crt, ca.key, server.crt, server.key, client.crt, client.key: refusing to overwrite existing files; give -force to replace them"; code != 1 || errOut != want {
		t.Errorf("certs init over existing files: exit %d, stderr %q; want exit 1, %q", code, errOut, want)
	}
	// Flags before the directory, and from the environment.
	kindlingOK(t, map[string]string{"KINDLING_SERVER_NAME": "a.lan,b.lan"}, "", "certs", "init", "-force", dir)
	after, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if string(before) == string(after) {
		t.Errorf("certs init -force left ca.crt as it was")
	}
	pair, err = tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	if leaf, _ = x509.ParseCertificate(pair.Certificate[0]); !slices.Equal(leaf.DNSNames, []string{"a.lan", "b.lan"}) {
		t.Errorf("KINDLING_SERVER_NAME=a.lan,b.lan gave DNS names %q", leaf.DNSNames)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"certs"}, "certs: the one command is init"},
		{[]string{"certs", "make"}, "certs: the one command is init"},
		{[]string{"certs", "init", "-server-name", "x"}, "certs init takes one directory, got 0: []"},
		{[]string{"certs", "init", "a", "b", "-ip", "10.0.0.1"}, `certs init takes one directory, got 2: ["a" "b"]`},
		{[]string{"certs", "init", dir + "2"}, "certs init: give -server-name and/or -ip: the names and addresses clients use to reach the server, e.g. -server-name kindling.lan -ip 10.0.0.1"},
		{[]string{"certs", "init", dir + "2", "-ip", "10.0.0.300"}, `-ip "10.0.0.300": not an IP address (want e.g. 10.0.0.1 or fd00::1)`},
		{[]string{"certs", "init", dir + "2", "-ip", "10.0.0.1", "-days", "0"}, "-days 0: want a positive number of days"},
	} {
		_, errOut, code := kindling(t, nil, "", tc.args...)
		if line := errOut[strings.LastIndex(errOut, "\n")+1:]; code != 2 || line != tc.want {
			t.Errorf("kindling %s: exit %d, stderr %q; want exit 2, %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	if _, err := os.Stat(dir + "2"); !os.IsNotExist(err) {
		t.Errorf("a refused certs init created %s", dir+"2")
	}
	if _, _, code := kindling(t, nil, "", "certs", "init", "-h"); code != 0 {
		t.Errorf("certs init -h: exit %d, want 0", code)
	}
}
