// Package apitest makes what tests of the control plane need: a CA with a
// server and a client certificate written as PEM files (the layout
// `kindling certs init` writes), and TLS client configurations from them.
package apitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a CA and the certificates it signed, as files in Dir.
type PKI struct {
	Dir string
	// CA, ServerCert, ServerKey, ClientCert, ClientKey are file paths:
	// Dir/ca.crt, server.crt, server.key, client.crt, client.key.
	CA, ServerCert, ServerKey, ClientCert, ClientKey string

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// NewPKI writes a new CA (named name), a server certificate for
// 127.0.0.1, ::1 and localhost, and a client certificate into dir.
func NewPKI(dir, name string) (*PKI, error) {
	p := &PKI{
		Dir:        dir,
		CA:         filepath.Join(dir, "ca.crt"),
		ServerCert: filepath.Join(dir, "server.crt"),
		ServerKey:  filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"),
		ClientKey:  filepath.Join(dir, "client.key"),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.caKey = key
	if err := writePEM(p.CA, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if err := p.Issue(p.ServerCert, p.ServerKey, "kindling-server", true); err != nil {
		return nil, err
	}
	if err := p.Issue(p.ClientCert, p.ClientKey, "kindling-client", false); err != nil {
		return nil, err
	}
	return p, nil
}

// Issue writes a certificate and key signed by the CA: for a server
// (127.0.0.1, ::1, localhost) or a client.
func (p *PKI) Issue(certFile, keyFile, cn string, server bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writePEM(keyFile, "EC PRIVATE KEY", kb, 0o600)
}

// ClientTLS is a client configuration trusting the CA and presenting the
// client certificate (none when withCert is false).
func (p *PKI) ClientTLS(withCert bool) (*tls.Config, error) {
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// ForeignClientTLS trusts this PKI's CA but presents a client certificate
// from other, a different CA — always, even though the server's list of
// acceptable CAs does not name other's (Go's client would otherwise
// quietly send no certificate).
func (p *PKI) ForeignClientTLS(other *PKI) (*tls.Config, error) {
	c, err := p.ClientTLS(false)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(other.ClientCert, other.ClientKey)
	if err != nil {
		return nil, err
	}
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return c, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return n
}

func writePEM(file, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
