package main

import (
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"

	"github.com/kindlingboot/kindling/matchbox/api/client"
)

// newAPIClient makes the control-plane client from the provider settings.
// It does not contact the server: a plan that reads nothing needs no
// server.
func newAPIClient(s providerSettings) (*client.Client, error) {
	cfg := client.Config{
		Endpoint: s.Endpoint,
		Token:    s.Token,
		// Each attempt is bounded; connection failures and 502/503/504
		// are retried a few times (the client's defaults) before a
		// read fails, so a restarting server is waited for briefly.
		Timeout: 30 * time.Second,
	}
	if s.CA != "" {
		cfg.CAPEM = []byte(s.CA)
	}
	if s.ClientCert != "" {
		cfg.CertPEM = []byte(s.ClientCert)
	}
	if s.ClientKey != "" {
		cfg.KeyPEM = []byte(s.ClientKey)
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("kindling provider: %w", err)
	}
	return c, nil
}

// configuredClient is the client Configure handed to resources; nil (with
// no error) before the provider is configured, as during validation.
func configuredClient(data any, diags *diag.Diagnostics) *client.Client {
	if data == nil {
		return nil
	}
	c, ok := data.(*client.Client)
	if !ok {
		diags.AddError("Kindling provider", fmt.Sprintf("provider data is %T, want *client.Client (a provider bug)", data))
		return nil
	}
	return c
}
