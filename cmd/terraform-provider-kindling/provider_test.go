package main

import (
	"context"
	"encoding/json"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/profiles"
)

// dyn builds a Dynamic value the way Terraform sends an HCL literal.
func dyn(t *testing.T, v tftypes.Value) types.Dynamic {
	t.Helper()
	a, err := types.DynamicType.ValueFromTerraform(context.Background(), v)
	if err != nil {
		t.Fatalf("ValueFromTerraform(%v): %v", v, err)
	}
	return a.(types.Dynamic)
}

func num(s string) tftypes.Value {
	f, _, err := big.ParseFloat(s, 10, 512, big.ToNearestEven)
	if err != nil {
		panic(err)
	}
	return tftypes.NewValue(tftypes.Number, f)
}

func str(s string) tftypes.Value { return tftypes.NewValue(tftypes.String, s) }

func obj(m map[string]tftypes.Value) tftypes.Value {
	ts := map[string]tftypes.Type{}
	for k, v := range m {
		ts[k] = v.Type()
	}
	return tftypes.NewValue(tftypes.Object{AttributeTypes: ts}, m)
}

func tuple(vs ...tftypes.Value) tftypes.Value {
	ts := make([]tftypes.Type, len(vs))
	for i, v := range vs {
		ts[i] = v.Type()
	}
	return tftypes.NewValue(tftypes.Tuple{ElementTypes: ts}, vs)
}

func TestMetadataJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      tftypes.Value
		want    string // JSON; "" for nil
		wantErr string
	}{
		{"null", tftypes.NewValue(tftypes.DynamicPseudoType, nil), "", ""},
		{"object", obj(map[string]tftypes.Value{
			"name":    str("node1"),
			"size":    num("10"),
			"ratio":   num("0.5"),
			"big":     num("123456789012345678901234567890"),
			"on":      tftypes.NewValue(tftypes.Bool, true),
			"none":    tftypes.NewValue(tftypes.String, nil),
			"tags":    tuple(str("a"), num("1")),
			"labels":  tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, map[string]tftypes.Value{"k": str("v")}),
			"keys":    tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, []tftypes.Value{str("x")}),
			"members": tftypes.NewValue(tftypes.Set{ElementType: tftypes.String}, []tftypes.Value{str("s")}),
			"nested":  obj(map[string]tftypes.Value{"disk": obj(map[string]tftypes.Value{"dev": str("/dev/vda")})}),
		}), `{"big":123456789012345678901234567890,"keys":["x"],"labels":{"k":"v"},"members":["s"],"name":"node1","nested":{"disk":{"dev":"/dev/vda"}},"none":null,"on":true,"ratio":0.5,"size":10,"tags":["a",1]}`, ""},
		{"map of string", tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, map[string]tftypes.Value{"a": str("b")}), `{"a":"b"}`, ""},
		{"not an object", str("x"), "", "is not an object"},
		{"list at top", tuple(str("x")), "", "is not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := metadataJSON(context.Background(), dyn(t, tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("metadataJSON(%v) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("metadataJSON(%v): %v", tt.in, err)
			}
			if tt.want == "" {
				if got != nil {
					t.Fatalf("metadataJSON(%v) = %v, want nil", tt.in, got)
				}
				return
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("metadataJSON(%v) = %s, want %s", tt.in, b, tt.want)
			}
		})
	}
	if _, err := metadataJSON(context.Background(), types.DynamicUnknown()); err == nil {
		t.Error("metadataJSON(unknown) succeeded, want an error")
	}
}

// TestMetadataRoundTrip: JSON the server returns becomes the value the
// same HCL literal gives, and converts back to the same JSON.
func TestMetadataRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		json string
		hcl  tftypes.Value // what `metadata = { … }` gives; zero when not checked
	}{
		{"flat", `{"name":"node1","size":10,"on":false}`, obj(map[string]tftypes.Value{
			"name": str("node1"), "size": num("10"), "on": tftypes.NewValue(tftypes.Bool, false),
		})},
		{"nested", `{"disk":{"dev":"/dev/vda","parts":[1,2.5,"x"]},"tags":[]}`, obj(map[string]tftypes.Value{
			"disk": obj(map[string]tftypes.Value{"dev": str("/dev/vda"), "parts": tuple(num("1"), num("2.5"), str("x"))}),
			"tags": tuple(),
		})},
		{"null member", `{"a":null}`, tftypes.Value{}},
		{"exact big number", `{"n":123456789012345678901234567890}`, obj(map[string]tftypes.Value{"n": num("123456789012345678901234567890")})},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			d := json.NewDecoder(strings.NewReader(tt.json))
			d.UseNumber() // as the client decodes
			if err := d.Decode(&m); err != nil {
				t.Fatal(err)
			}
			v, err := metadataValue(ctx, m)
			if err != nil {
				t.Fatalf("metadataValue(%s): %v", tt.json, err)
			}
			if tt.hcl.Type() != nil {
				if want := dyn(t, tt.hcl); !v.Equal(want) {
					t.Errorf("metadataValue(%s) = %v, want %v (the HCL literal)", tt.json, v, want)
				}
			}
			back, err := metadataJSON(ctx, v)
			if err != nil {
				t.Fatalf("metadataJSON(metadataValue(%s)): %v", tt.json, err)
			}
			b, _ := json.Marshal(back)
			var want, got any
			json.Unmarshal([]byte(tt.json), &want)
			json.Unmarshal(b, &got)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("round trip of %s = %s (-want +got):\n%s", tt.json, b, diff)
			}
		})
	}
	if v, err := metadataValue(ctx, nil); err != nil || !v.IsNull() {
		t.Errorf("metadataValue(nil) = %v, %v; want null", v, err)
	}
}

func TestSameJSON(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{`{}`, `null`, true},
		{`{"a":1}`, `{"a":1.0}`, true},
		{`{"a":[1,"x"]}`, `{"a":[1,"x"]}`, true},
		{`{"a":{"b":true}}`, `{"a":{"b":false}}`, false},
		{`{"a":"1"}`, `{"a":1}`, false},
		{`{"a":null}`, `{}`, false},
	}
	for _, tt := range tests {
		var a, b map[string]any
		json.Unmarshal([]byte(tt.a), &a)
		d := json.NewDecoder(strings.NewReader(tt.b))
		d.UseNumber()
		d.Decode(&b)
		if got := sameJSON(a, b); got != tt.want {
			t.Errorf("sameJSON(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func strMap(t *testing.T, m map[string]string) types.Map {
	t.Helper()
	if m == nil {
		return types.MapNull(types.StringType)
	}
	v, d := types.MapValueFrom(context.Background(), types.StringType, m)
	if d.HasError() {
		t.Fatal(d)
	}
	return v
}

func TestGroupState(t *testing.T) {
	ctx := context.Background()
	objMD := dyn(t, obj(map[string]tftypes.Value{"name": str("node1"), "size": num("10")}))
	mapMD := dyn(t, tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, map[string]tftypes.Value{"name": str("node1")}))
	tests := []struct {
		name         string
		prior        groupModel
		server       groups.Group
		wantSelector types.Map
		wantMetadata types.Dynamic
	}{
		{
			name:         "canonical MAC keeps the prior spelling",
			prior:        groupModel{Selector: strMap(t, map[string]string{"MAC": "52-54-00-AA-BB-01"}), Metadata: objMD},
			server:       groups.Group{ID: "g", Profile: "p", Selector: groups.Selector{"mac": {"52:54:00:aa:bb:01"}}, Metadata: map[string]any{"name": "node1", "size": json.Number("10")}},
			wantSelector: strMap(t, map[string]string{"MAC": "52-54-00-AA-BB-01"}),
			wantMetadata: objMD,
		},
		{
			name:         "changed on the server shows the server's",
			prior:        groupModel{Selector: strMap(t, map[string]string{"mac": "52:54:00:aa:bb:01"}), Metadata: objMD},
			server:       groups.Group{ID: "g", Profile: "p", Selector: groups.Selector{"mac": {"52:54:00:aa:bb:02"}}, Metadata: map[string]any{"name": "node2"}},
			wantSelector: strMap(t, map[string]string{"mac": "52:54:00:aa:bb:02"}),
			wantMetadata: dyn(t, obj(map[string]tftypes.Value{"name": str("node2")})),
		},
		{
			name:         "a map stays a map",
			prior:        groupModel{Selector: strMap(t, map[string]string{}), Metadata: mapMD},
			server:       groups.Group{ID: "g", Profile: "p", Metadata: map[string]any{"name": "node1"}},
			wantSelector: strMap(t, map[string]string{}),
			wantMetadata: mapMD,
		},
		{
			name:         "import: nothing prior",
			prior:        groupModel{Selector: types.MapNull(types.StringType), Metadata: types.DynamicNull()},
			server:       groups.Group{ID: "g", Profile: "p", Selector: groups.Selector{"os": {"installed"}}, Metadata: map[string]any{"name": "node1", "size": json.Number("10")}},
			wantSelector: strMap(t, map[string]string{"os": "installed"}),
			wantMetadata: objMD,
		},
		{
			name:         "empty stays null",
			prior:        groupModel{Selector: types.MapNull(types.StringType), Metadata: types.DynamicNull()},
			server:       groups.Group{ID: "g", Profile: "p"},
			wantSelector: types.MapNull(types.StringType),
			wantMetadata: types.DynamicNull(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := groupState(ctx, tt.prior, &tt.server)
			if err != nil {
				t.Fatalf("groupState: %v", err)
			}
			if !got.Selector.Equal(tt.wantSelector) {
				t.Errorf("groupState selector = %v, want %v", got.Selector, tt.wantSelector)
			}
			if !got.Metadata.Equal(tt.wantMetadata) {
				t.Errorf("groupState metadata = %v, want %v", got.Metadata, tt.wantMetadata)
			}
			if got.Name.ValueString() != "g" || got.Profile.ValueString() != "p" {
				t.Errorf("groupState name, profile = %v, %v; want g, p", got.Name, got.Profile)
			}
		})
	}
	_, err := groupState(ctx, groupModel{}, &groups.Group{ID: "g", Profile: "p", Selector: groups.Selector{"mac": {"52:54:00:aa:bb:01", "52:54:00:aa:bb:02"}}})
	if err == nil || !strings.Contains(err.Error(), `selector "mac" has 2 values`) {
		t.Errorf("groupState with a list selector: error = %v, want one naming the key", err)
	}
}

func strList(vs ...string) types.List {
	es := make([]attr.Value, len(vs))
	for i, s := range vs {
		es[i] = types.StringValue(s)
	}
	return types.ListValueMust(types.StringType, es)
}

func TestProfileState(t *testing.T) {
	null := types.ListNull(types.StringType)
	tests := []struct {
		name   string
		prior  profileModel
		server profiles.Profile
		want   profileModel
	}{
		{
			name:   "boot",
			prior:  profileModel{Initrd: null, Args: null},
			server: profiles.Profile{ID: "p", Boot: &profiles.Boot{Kernel: "/k", Initrd: []string{"/i"}, Args: []string{"a", "b"}}},
			want:   profileModel{Name: types.StringValue("p"), Kernel: types.StringValue("/k"), Initrd: strList("/i"), Args: strList("a", "b")},
		},
		{
			name:   "empty lists the server omits stay empty",
			prior:  profileModel{Initrd: strList(), Args: strList()},
			server: profiles.Profile{ID: "p", Boot: &profiles.Boot{Kernel: "/k"}},
			want:   profileModel{Name: types.StringValue("p"), Kernel: types.StringValue("/k"), Initrd: strList(), Args: strList()},
		},
		{
			name:   "no boot",
			prior:  profileModel{Kernel: types.StringValue("/k"), Initrd: strList("/i"), Args: null},
			server: profiles.Profile{ID: "p"},
			want:   profileModel{Name: types.StringValue("p"), Kernel: types.StringNull(), Initrd: null, Args: null},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := profileState(tt.prior, &tt.server)
			for _, c := range []struct {
				field     string
				got, want attr.Value
			}{
				{"name", got.Name, tt.want.Name},
				{"kernel", got.Kernel, tt.want.Kernel},
				{"initrd", got.Initrd, tt.want.Initrd},
				{"args", got.Args, tt.want.Args},
			} {
				if !c.got.Equal(c.want) {
					t.Errorf("profileState(%+v).%s = %v, want %v", tt.server, c.field, c.got, c.want)
				}
			}
		})
	}
}

func TestProfileFiles(t *testing.T) {
	m := profileModel{
		Name:    types.StringValue("worker"),
		Kernel:  types.StringValue("/k"),
		Initrd:  types.ListNull(types.StringType),
		Args:    strList("a"),
		Butane:  types.StringValue("variant: fcos\nversion: 1.5.0\n"),
		Generic: types.StringValue("x"),
	}
	p, err := m.profile()
	if err != nil {
		t.Fatal(err)
	}
	want := &profiles.Profile{ID: "worker", Name: "worker", Boot: &profiles.Boot{Kernel: "/k", Args: []string{"a"}}, IgnitionID: "worker.yaml", GenericID: "worker"}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("profile() diff (-want +got):\n%s", diff)
	}
	m.Butane, m.RawIgnition = types.StringNull(), types.StringValue("{}")
	if p, _ := m.profile(); p.IgnitionID != "worker.ign" {
		t.Errorf("profile() with raw_ignition: ignition_id = %q, want worker.ign", p.IgnitionID)
	}
}

func TestSettings(t *testing.T) {
	env := map[string]string{
		"KINDLING_ENDPOINT":    "10.0.0.1:8081",
		"KINDLING_CLIENT_CERT": "CERT",
		"KINDLING_CLIENT_KEY":  "KEY",
	}
	null := types.StringNull()
	tests := []struct {
		name    string
		env     map[string]string
		m       providerModel
		want    providerSettings
		wantErr string
	}{
		{"from env", env, providerModel{null, null, null, null, null},
			providerSettings{Endpoint: "10.0.0.1:8081", ClientCert: "CERT", ClientKey: "KEY"}, ""},
		{"config wins", env, providerModel{types.StringValue("h:1"), types.StringValue("CA"), null, null, types.StringValue(" tok\n")},
			providerSettings{Endpoint: "h:1", CA: "CA", ClientCert: "CERT", ClientKey: "KEY", Token: "tok"}, ""},
		{"no endpoint", nil, providerModel{null, null, null, null, types.StringValue("t")}, providerSettings{}, "endpoint is missing"},
		{"cert without key", nil, providerModel{types.StringValue("h:1"), null, types.StringValue("C"), null, null}, providerSettings{}, "go together"},
		{"no credentials", nil, providerModel{types.StringValue("h:1"), null, null, null, null}, providerSettings{}, "no credentials"},
		{"unknown", nil, providerModel{types.StringUnknown(), null, null, null, null}, providerSettings{}, "not known until apply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &kindlingProvider{getenv: func(k string) string { return tt.env[k] }}
			got, diags := p.settings(tt.m)
			if tt.wantErr != "" {
				if !diags.HasError() || !strings.Contains(diagText(diags.Errors()), tt.wantErr) {
					t.Fatalf("settings(%+v) diagnostics = %v, want an error containing %q", tt.m, diags, tt.wantErr)
				}
				return
			}
			if diags.HasError() {
				t.Fatalf("settings(%+v): %v", tt.m, diags)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("settings(%+v) diff (-want +got):\n%s", tt.m, diff)
			}
		})
	}
}

func diagText[T interface{ Detail() string }](ds []T) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.Detail())
		b.WriteString("\n")
	}
	return b.String()
}
