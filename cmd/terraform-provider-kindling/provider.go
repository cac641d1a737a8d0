package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// kindlingProvider is the provider: its configuration says how to reach
// the control plane; Configure hands every resource one API client.
type kindlingProvider struct {
	version string
	// getenv reads the KINDLING_* fallbacks.
	getenv func(string) string
}

func newProvider(version string, getenv func(string) string) func() provider.Provider {
	return func() provider.Provider {
		return &kindlingProvider{version: version, getenv: getenv}
	}
}

// providerModel is the provider block.
type providerModel struct {
	Endpoint   types.String `tfsdk:"endpoint"`
	CA         types.String `tfsdk:"ca"`
	ClientCert types.String `tfsdk:"client_cert"`
	ClientKey  types.String `tfsdk:"client_key"`
	Token      types.String `tfsdk:"token"`
}

// providerSettings is the provider block after environment fallbacks.
type providerSettings struct {
	Endpoint   string
	CA         string // PEM
	ClientCert string // PEM
	ClientKey  string // PEM
	Token      string
}

// envNames maps each provider attribute to its environment fallback.
var envNames = map[string]string{
	"endpoint":    "KINDLING_ENDPOINT",
	"ca":          "KINDLING_CA",
	"client_cert": "KINDLING_CLIENT_CERT",
	"client_key":  "KINDLING_CLIENT_KEY",
	"token":       "KINDLING_TOKEN",
}

func (p *kindlingProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "kindling"
	resp.Version = p.version
}

func (p *kindlingProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manages Kindling profiles and groups through the control plane of `kindling serve -rpc-address` (TLS, client certificate or bearer token).",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				Optional:    true,
				Description: "The control plane's HOST:PORT (kindling serve -rpc-address). Default: $KINDLING_ENDPOINT.",
			},
			"ca": schema.StringAttribute{
				Optional:    true,
				Description: "PEM CA certificate(s) the server's certificate must chain to (ca.crt of `kindling certs init`). Default: $KINDLING_CA; empty uses the system roots.",
			},
			"client_cert": schema.StringAttribute{
				Optional:    true,
				Description: "PEM client certificate (client.crt). Default: $KINDLING_CLIENT_CERT.",
			},
			"client_key": schema.StringAttribute{
				Optional:    true,
				Sensitive:   true,
				Description: "PEM private key of client_cert (client.key). Default: $KINDLING_CLIENT_KEY.",
			},
			"token": schema.StringAttribute{
				Optional:    true,
				Sensitive:   true,
				Description: "Bearer token (the content of the server's -api-token-file), instead of a client certificate. Default: $KINDLING_TOKEN.",
			},
		},
	}
}

func (p *kindlingProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, diags := p.settings(m)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, err := newAPIClient(s)
	if err != nil {
		resp.Diagnostics.AddError("Kindling provider configuration", err.Error())
		return
	}
	resp.ResourceData = c
}

// settings resolves the provider block against the environment and checks
// that it is complete.
func (p *kindlingProvider) settings(m providerModel) (providerSettings, diag.Diagnostics) {
	var diags diag.Diagnostics
	get := func(name string, v types.String) string {
		if v.IsUnknown() {
			diags.AddAttributeError(path.Root(name), "Kindling provider configuration",
				fmt.Sprintf("%s is not known until apply; the provider needs it to plan: use a value known at plan time or $%s", name, envNames[name]))
			return ""
		}
		if !v.IsNull() {
			return v.ValueString()
		}
		return p.getenv(envNames[name])
	}
	s := providerSettings{
		Endpoint:   strings.TrimSpace(get("endpoint", m.Endpoint)),
		CA:         get("ca", m.CA),
		ClientCert: get("client_cert", m.ClientCert),
		ClientKey:  get("client_key", m.ClientKey),
		Token:      strings.TrimSpace(get("token", m.Token)),
	}
	if diags.HasError() {
		return s, diags
	}
	if s.Endpoint == "" {
		diags.AddAttributeError(path.Root("endpoint"), "Kindling provider configuration",
			"endpoint is missing: set endpoint = \"HOST:PORT\" (the server's -rpc-address) or $KINDLING_ENDPOINT")
	}
	if (s.ClientCert == "") != (s.ClientKey == "") {
		diags.AddAttributeError(path.Root("client_cert"), "Kindling provider configuration",
			"client_cert and client_key go together: set both (client.crt and client.key of `kindling certs init`) or neither")
	}
	if s.ClientCert == "" && s.Token == "" {
		diags.AddAttributeError(path.Root("client_cert"), "Kindling provider configuration",
			"no credentials: set client_cert and client_key, or token (or $KINDLING_CLIENT_CERT and $KINDLING_CLIENT_KEY, or $KINDLING_TOKEN)")
	}
	return s, diags
}

func (p *kindlingProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{newProfileResource, newGroupResource}
}

func (p *kindlingProvider) DataSources(context.Context) []func() datasource.DataSource {
	return nil
}
