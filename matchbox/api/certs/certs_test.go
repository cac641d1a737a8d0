package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustInit(t *testing.T, opts Options) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if err := Init(dir, opts); err != nil {
		t.Fatalf("Init(%q, %+v) = %v", dir, opts, err)
	}
	return dir
}

func readCert(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	p, rest := pem.Decode(b)
	if p == nil || p.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("%s: want exactly one CERTIFICATE PEM block, got %q", name, b)
	}
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func TestInitFiles(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	dir := mustInit(t, Options{
		ServerNames: []string{"kindling.example.com", "localhost"},
		IPs:         []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.5"), net.ParseIP("::1")},
		Days:        30,
		Now:         func() time.Time { return now },
	})
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Init made %s with %v (err %v), want mode 0700", dir, fi.Mode(), err)
	}
	for _, f := range Files {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("Init did not write %s: %v", f, err)
		}
		want := os.FileMode(0o644)
		if strings.HasSuffix(f, ".key") {
			want = 0o600
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", f, fi.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(Files) {
		t.Errorf("Init left %d entries in %s, want exactly %v", len(entries), dir, Files)
	}

	ca, server, client := readCert(t, dir, CACert), readCert(t, dir, ServerCert), readCert(t, dir, ClientCert)
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca.crt: IsCA %v, key usage %v; want a signing CA", ca.IsCA, ca.KeyUsage)
	}
	for name, c := range map[string]*x509.Certificate{"ca.crt": ca, "server.crt": server, "client.crt": client} {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: public key %T, want ECDSA P-256", name, c.PublicKey)
		}
		if want := now.Add(-time.Hour); !c.NotBefore.Equal(want) {
			t.Errorf("%s: NotBefore %v, want %v", name, c.NotBefore, want)
		}
		if want := now.Add(30 * 24 * time.Hour); !c.NotAfter.Equal(want) {
			t.Errorf("%s: NotAfter %v, want %v", name, c.NotAfter, want)
		}
	}
	if !slices.Equal(server.DNSNames, []string{"kindling.example.com", "localhost"}) {
		t.Errorf("server.crt DNS names %q", server.DNSNames)
	}
	if len(server.IPAddresses) != 3 || !server.IPAddresses[1].Equal(net.ParseIP("10.0.0.5")) {
		t.Errorf("server.crt IPs %v", server.IPAddresses)
	}
	if server.Subject.CommonName != "kindling.example.com" {
		t.Errorf("server.crt CN %q", server.Subject.CommonName)
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	at := now.Add(time.Hour)
	for _, tc := range []struct {
		name  string
		cert  *x509.Certificate
		usage x509.ExtKeyUsage
		host  string
		ok    bool
	}{
		{"server for its DNS name", server, x509.ExtKeyUsageServerAuth, "kindling.example.com", true},
		{"server for localhost", server, x509.ExtKeyUsageServerAuth, "localhost", true},
		{"server for its IP", server, x509.ExtKeyUsageServerAuth, "10.0.0.5", true},
		{"server for ::1", server, x509.ExtKeyUsageServerAuth, "::1", true},
		{"server for another name", server, x509.ExtKeyUsageServerAuth, "evil.example.com", false},
		{"server used as a client", server, x509.ExtKeyUsageClientAuth, "", false},
		{"client", client, x509.ExtKeyUsageClientAuth, "", true},
		{"client used as a server", client, x509.ExtKeyUsageServerAuth, "", false},
	} {
		_, err := tc.cert.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("%s: Verify(host %q, usage %v) = %v, want ok %v", tc.name, tc.host, tc.usage, err, tc.ok)
		}
	}
	if _, err := server.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots, CurrentTime: now.Add(31 * 24 * time.Hour)}); err == nil {
		t.Errorf("server.crt verifies 31 days after a 30-day Init; want expired")
	}

	// Each key belongs to its certificate.
	for _, pair := range [][2]string{{CACert, CAKey}, {ServerCert, ServerKey}, {ClientCert, ClientKey}} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])); err != nil {
			t.Errorf("tls.LoadX509KeyPair(%s, %s) = %v", pair[0], pair[1], err)
		}
	}
}

func TestInitErrors(t *testing.T) {
	ok := Options{ServerNames: []string{"localhost"}}
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no names", Options{}, "no server name or IP"},
		{"bad name", Options{ServerNames: []string{"a b"}}, `server name "a b": not a DNS name`},
		{"negative days", Options{ServerNames: []string{"x"}, Days: -1}, "days -1: want a positive number"},
	} {
		dir := t.TempDir()
		err := Init(dir, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Init(%+v) = %v, want an error containing %q", tc.name, tc.opts, err, tc.want)
		}
	}

	dir := mustInit(t, ok)
	before, _ := os.ReadFile(filepath.Join(dir, CAKey))
	err := Init(dir, ok)
	if !errors.Is(err, ErrExist) || !strings.Contains(err.Error(), "already holds ca.crt, ca.key, server.crt, server.key, client.crt, client.key") {
		t.Fatalf("Init over existing files = %v, want a refusal", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKey))
	if string(before) != string(after) {
		t.Errorf("a refused Init changed ca.key")
	}
	// One stray file is enough to refuse, and nothing else gets written.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, ClientKey), []byte("mine"), 0o600)
	if err := Init(dir2, ok); err == nil || !strings.Contains(err.Error(), "client.key") {
		t.Errorf("Init with an existing client.key = %v, want a refusal naming client.key", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, CACert)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused Init wrote ca.crt (stat: %v)", err)
	}

	ok.Force = true
	if err := Init(dir, ok); err != nil {
		t.Fatalf("Init with Force = %v", err)
	}
	after, _ = os.ReadFile(filepath.Join(dir, CAKey))
	if string(before) == string(after) {
		t.Errorf("Init with Force left ca.key unchanged")
	}
}

// tlsConfigs loads dir's files the way a server and a client would.
func tlsConfigs(t *testing.T, dir string) (server, client *tls.Config) {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("loading %s: %v", CACert, err)
	}
	sc, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCert), filepath.Join(dir, ServerKey))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tls.LoadX509KeyPair(filepath.Join(dir, ClientCert), filepath.Join(dir, ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{sc}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: []tls.Certificate{cc}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

// handshake runs one TLS exchange over a real socket on 127.0.0.1: the
// client sends "ping", the server answers "pong". It returns the client's
// and the server's error.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- err
			return
		}
		_, err = c.Write([]byte("pong"))
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: client}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err = c.Write([]byte("ping")); err == nil {
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			if err == nil && string(buf) != "pong" {
				err = errors.New("answer " + string(buf))
			}
		}
	}
	return err, <-done
}

func TestHandshake(t *testing.T) {
	dir := mustInit(t, Options{ServerNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	server, client := tlsConfigs(t, dir)
	if cerr, serr := handshake(t, server, client); cerr != nil || serr != nil {
		t.Fatalf("mutual TLS over 127.0.0.1: client %v, server %v", cerr, serr)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c := client.Clone()
		c.MinVersion, c.MaxVersion = v, v
		if cerr, serr := handshake(t, server, c); cerr != nil || serr != nil {
			t.Errorf("mutual TLS %s: client %v, server %v", tls.VersionName(v), cerr, serr)
		}
	}
	byName := client.Clone()
	byName.ServerName = "localhost"
	if cerr, serr := handshake(t, server, byName); cerr != nil || serr != nil {
		t.Errorf("mutual TLS with server name localhost: client %v, server %v", cerr, serr)
	}

	noCert := client.Clone()
	noCert.Certificates = nil
	if _, serr := handshake(t, server, noCert); serr == nil {
		t.Errorf("a client without a certificate got through RequireAndVerifyClientCert")
	}

	// A client certificate from another Init (another CA) is refused, and
	// so is a server certificate from it.
	other := mustInit(t, Options{ServerNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	otherServer, otherClient := tlsConfigs(t, other)
	if _, serr := handshake(t, server, otherClient); serr == nil {
		t.Errorf("a client certificate from another CA got through")
	}
	if cerr, _ := handshake(t, otherServer, client); cerr == nil {
		t.Errorf("the client trusted a server certificate from another CA")
	}
}

func TestOpenSSLVerify(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (Debian package openssl): skipping the cross-check")
	}
	dir := mustInit(t, Options{ServerNames: []string{"kindling.example.com"}, IPs: []net.IP{net.ParseIP("192.0.2.1")}})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", "-CAfile", CACert, "-purpose", "sslserver", ServerCert}, "server.crt: OK"},
		{[]string{"verify", "-CAfile", CACert, "-purpose", "sslclient", ClientCert}, "client.crt: OK"},
		{[]string{"verify", "-CAfile", CACert, "-purpose", "sslserver", "-verify_hostname", "kindling.example.com", ServerCert}, "server.crt: OK"},
		{[]string{"verify", "-CAfile", CACert, "-purpose", "sslserver", "-verify_ip", "192.0.2.1", ServerCert}, "server.crt: OK"},
	} {
		cmd := exec.Command(openssl, tc.args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("openssl %s: %v\n%s", strings.Join(tc.args, " "), err, out)
		}
	}
	for _, bad := range [][]string{
		{"verify", "-CAfile", CACert, "-purpose", "sslserver", ClientCert},
		{"verify", "-CAfile", CACert, "-purpose", "sslserver", "-verify_hostname", "evil.example.com", ServerCert},
	} {
		cmd := exec.Command(openssl, bad...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("openssl %s succeeded, want a failure:\n%s", strings.Join(bad, " "), out)
		}
	}
	for _, k := range []string{CAKey, ServerKey, ClientKey} {
		cmd := exec.Command(openssl, "pkey", "-in", k, "-noout", "-text")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "prime256v1") {
			t.Errorf("openssl pkey -in %s: %v\n%s", k, err, out)
		}
	}
}
