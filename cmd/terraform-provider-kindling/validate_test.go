package main

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// validate runs r's ValidateConfig on a configuration given as attribute
// values (absent attributes are null) and returns the error details.
func validate(t *testing.T, r resource.ResourceWithValidateConfig, attrs map[string]tftypes.Value) string {
	t.Helper()
	ctx := context.Background()
	var sr resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sr)
	typ := sr.Schema.Type().TerraformType(ctx).(tftypes.Object)
	vals := map[string]tftypes.Value{}
	for name, at := range typ.AttributeTypes {
		if v, ok := attrs[name]; ok {
			vals[name] = v
		} else {
			vals[name] = tftypes.NewValue(at, nil)
		}
	}
	req := resource.ValidateConfigRequest{Config: tfsdk.Config{Schema: sr.Schema, Raw: tftypes.NewValue(typ, vals)}}
	var resp resource.ValidateConfigResponse
	r.ValidateConfig(ctx, req, &resp)
	return diagText(resp.Diagnostics.Errors())
}

func TestValidateConfig(t *testing.T) {
	strs := func(vs ...string) tftypes.Value {
		l := make([]tftypes.Value, len(vs))
		for i, s := range vs {
			l[i] = str(s)
		}
		return tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, l)
	}
	sel := func(k, v string) tftypes.Value {
		return tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, map[string]tftypes.Value{k: str(v)})
	}
	unknownIP := obj(map[string]tftypes.Value{"ip": tftypes.NewValue(tftypes.String, tftypes.UnknownValue)})
	tests := []struct {
		name    string
		r       resource.ResourceWithValidateConfig
		attrs   map[string]tftypes.Value
		wantErr string // "" for valid
	}{
		{"group ok", &groupResource{}, map[string]tftypes.Value{"name": str("node1"), "profile": str("p"), "selector": sel("mac", "52-54-00-AA-BB-01"), "metadata": obj(map[string]tftypes.Value{"a": num("1")})}, ""},
		{"metadata not known yet", &groupResource{}, map[string]tftypes.Value{"name": str("node1"), "profile": str("p"), "metadata": unknownIP}, ""},
		{"metadata not an object", &groupResource{}, map[string]tftypes.Value{"name": str("node1"), "profile": str("p"), "metadata": str("x")}, "is not an object"},
		{"bad group name", &groupResource{}, map[string]tftypes.Value{"name": str("../x"), "profile": str("p")}, "not a valid group id"},
		{"bad MAC", &groupResource{}, map[string]tftypes.Value{"name": str("g"), "profile": str("p"), "selector": sel("mac", "nope")}, "nope"},
		{"profile ok", &profileResource{}, map[string]tftypes.Value{"name": str("p"), "kernel": str("/k"), "args": strs("a"), "butane": str("variant: fcos")}, ""},
		{"config only", &profileResource{}, map[string]tftypes.Value{"name": str("p"), "raw_ignition": str("{}")}, ""},
		{"both configs", &profileResource{}, map[string]tftypes.Value{"name": str("p"), "raw_ignition": str("{}"), "butane": str("x")}, "keep one of them"},
		{"args without kernel", &profileResource{}, map[string]tftypes.Value{"name": str("p"), "args": strs("a")}, "needs a kernel"},
		{"empty kernel", &profileResource{}, map[string]tftypes.Value{"name": str("p"), "kernel": str(" ")}, "kernel is empty"},
		{"bad profile name", &profileResource{}, map[string]tftypes.Value{"name": str("a/b")}, "not a valid profile id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := validate(t, tt.r, tt.attrs)
			switch {
			case tt.wantErr == "" && got != "":
				t.Errorf("ValidateConfig(%v) errors:\n%s\nwant none", tt.attrs, got)
			case tt.wantErr != "" && !strings.Contains(got, tt.wantErr):
				t.Errorf("ValidateConfig(%v) errors:\n%s\nwant one containing %q", tt.attrs, got, tt.wantErr)
			}
		})
	}
}
