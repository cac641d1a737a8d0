// Package certs makes the certificates a Kindling control plane starts
// with: a certificate authority, a server certificate for `kindling serve
// -rpc-address` and a client certificate for the CLI, the Terraform
// provider or any matchbox-compatible client — all ECDSA P-256, in PEM,
// under the file names matchbox users know (ca.crt, server.crt, server.key,
// client.crt, client.key, plus ca.key to sign more later).
//
// It needs no openssl: everything is crypto/x509 from the standard library.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The files Init writes, relative to its directory.
const (
	CACert     = "ca.crt"
	CAKey      = "ca.key"
	ServerCert = "server.crt"
	ServerKey  = "server.key"
	ClientCert = "client.crt"
	ClientKey  = "client.key"
)

// Files lists every file Init writes, in the order it writes them.
var Files = []string{CACert, CAKey, ServerCert, ServerKey, ClientCert, ClientKey}

// ErrExist is returned (wrapped) when Init would overwrite a file and
// Options.Force is not set.
var ErrExist = errors.New("refusing to overwrite existing files")

// DefaultDays is how long certificates are valid when Options.Days is 0.
const DefaultDays = 365

// Options says what the certificates are for.
type Options struct {
	// ServerNames are the DNS names clients use to reach the server; each
	// becomes a subject alternative name of server.crt. At least one name
	// or IP is required.
	ServerNames []string
	// IPs are the addresses clients use to reach the server; each becomes
	// an IP subject alternative name of server.crt.
	IPs []net.IP
	// Days is how long every certificate is valid; 0 means DefaultDays.
	Days int
	// Now is the clock; nil means time.Now. Certificates are valid from an
	// hour before Now, to absorb clock skew between machines.
	Now func() time.Time
	// Force overwrites existing files; without it Init refuses to touch a
	// directory that already holds any of Files.
	Force bool
}

// Init writes a new CA and a server and client certificate signed by it
// into dir (created 0700 if missing). Private keys are written 0600,
// certificates 0644. Without opts.Force, any existing file among Files is
// an error wrapping ErrExist, and nothing is written.
func Init(dir string, opts Options) error {
	if dir == "" {
		return errors.New("certificate directory: empty; give the directory to write ca.crt, server.crt, client.crt and their keys to")
	}
	if len(opts.ServerNames) == 0 && len(opts.IPs) == 0 {
		return errors.New("server certificate: no server name or IP; give the DNS names and/or IP addresses clients use to reach the server")
	}
	for _, n := range opts.ServerNames {
		if n == "" || strings.ContainsAny(n, " /:,") {
			return fmt.Errorf("server name %q: not a DNS name (want e.g. kindling.example.com or localhost)", n)
		}
	}
	for _, ip := range opts.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("server IP %v: not an IP address", ip)
		}
	}
	days := opts.Days
	switch {
	case days == 0:
		days = DefaultDays
	case days < 0:
		return fmt.Errorf("days %d: want a positive number of days the certificates stay valid", days)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating certificate directory: %w", err)
	}
	if !opts.Force {
		var exist []string
		for _, f := range Files {
			if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
				exist = append(exist, f)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("checking %s: %w", filepath.Join(dir, f), err)
			}
		}
		if len(exist) > 0 {
			return fmt.Errorf("%s already holds %s: %w", dir, strings.Join(exist, ", "), ErrExist)
		}
	}

	notBefore := now().Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := notBefore.Add(time.Duration(days)*24*time.Hour + time.Hour)
	ca, caKey, err := newCert(&x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Kindling"}, CommonName: "Kindling CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, nil, nil)
	if err != nil {
		return fmt.Errorf("making the CA: %w", err)
	}
	serverCN := ""
	if len(opts.ServerNames) > 0 {
		serverCN = opts.ServerNames[0]
	} else {
		serverCN = opts.IPs[0].String()
	}
	server, serverKey, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Kindling"}, CommonName: serverCN},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    opts.ServerNames,
		IPAddresses: opts.IPs,
	}, ca, caKey)
	if err != nil {
		return fmt.Errorf("making the server certificate: %w", err)
	}
	client, clientKey, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Kindling"}, CommonName: "kindling-client"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	if err != nil {
		return fmt.Errorf("making the client certificate: %w", err)
	}

	var keys [3][]byte
	for i, k := range []*ecdsa.PrivateKey{caKey, serverKey, clientKey} {
		if keys[i], err = keyPEM(k); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CACert, certPEM(ca), 0o644},
		{CAKey, keys[0], 0o600},
		{ServerCert, certPEM(server), 0o644},
		{ServerKey, keys[1], 0o600},
		{ClientCert, certPEM(client), 0o644},
		{ClientKey, keys[2], 0o600},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.mode, opts.Force); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// newCert makes a key and a certificate from tmpl, signed by parent's key
// (self-signed when parent is nil).
func newCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a P-256 key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generating a serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the new certificate: %w", err)
	}
	return cert, key, nil
}

// keyPEM encodes a private key as PKCS #8 PEM ("PRIVATE KEY"), which Go's
// tls.X509KeyPair, openssl and matchbox's clients all read.
func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// writeFile writes data to name with mode via a temporary file in the same
// directory, so the file appears whole with its final mode (a key is never
// readable by others, not even briefly). Without force an existing name is
// left alone and reported.
func writeFile(name string, data []byte, mode os.FileMode, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if force {
		if err := os.Rename(tmp.Name(), name); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		return nil
	}
	// Link fails if name exists: a file created since the check above is
	// never replaced.
	if err := os.Link(tmp.Name(), name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("writing %s: it appeared while writing the others: %w", name, ErrExist)
		}
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
