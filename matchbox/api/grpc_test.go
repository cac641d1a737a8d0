package api_test

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/kindlingboot/kindling/matchbox/api/apitest"
	"github.com/kindlingboot/kindling/matchbox/api/rpcpb"
)

func dial(t *testing.T, e *env, tc *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(e.api, "https://"), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestGRPC drives every RPC with Kindling's own generated client (the
// matchbox client is in test/, in a process of its own) and checks the
// codes of the mistakes.
func TestGRPC(t *testing.T) {
	e := start(t, options{files: map[string]string{"templates/x.ipxe": "#!ipxe\nkernel {{.boot.kernel}}\nboot\n"}})
	tc, _ := e.pki.ClientTLS(true)
	conn := dial(t, e, tc)
	groupsC, profilesC := rpcpb.NewGroupsClient(conn), rpcpb.NewProfilesClient(conn)
	ignC, genC, selC := rpcpb.NewIgnitionClient(conn), rpcpb.NewGenericClient(conn), rpcpb.NewSelectClient(conn)
	c := ctx(t)

	prof := &rpcpb.Profile{Id: "p2", Name: "two", IgnitionId: "p2.yaml.tmpl", GenericId: "p2", Boot: &rpcpb.NetBoot{Kernel: "/k2", Initrd: []string{"/i2"}, Args: []string{"a", "b"}}}
	if _, err := profilesC.ProfilePut(c, &rpcpb.ProfilePutRequest{Profile: prof}); err != nil {
		t.Fatalf("ProfilePut: %v", err)
	}
	if _, err := ignC.IgnitionPut(c, &rpcpb.IgnitionPutRequest{Name: "p2.yaml.tmpl", Config: []byte(butane)}); err != nil {
		t.Fatalf("IgnitionPut: %v", err)
	}
	if _, err := genC.GenericPut(c, &rpcpb.GenericPutRequest{Name: "p2", Config: []byte("host {{.hostname}}\n")}); err != nil {
		t.Fatalf("GenericPut: %v", err)
	}
	grp := &rpcpb.Group{Id: "node1", Name: "n", Profile: "p2",
		Selector: map[string]string{"mac": "52-54-00-00-00-01", "os": "installed"},
		Metadata: []byte(`{"hostname":"node1","nested":{"a":[1,2]}}`)}
	if _, err := groupsC.GroupPut(c, &rpcpb.GroupPutRequest{Group: grp}); err != nil {
		t.Fatalf("GroupPut: %v", err)
	}
	got, err := groupsC.GroupGet(c, &rpcpb.GroupGetRequest{Id: "node1"})
	if err != nil {
		t.Fatalf("GroupGet: %v", err)
	}
	want := &rpcpb.Group{Id: "node1", Name: "n", Profile: "p2",
		Selector: map[string]string{"mac": mac1, "os": "installed"},
		Metadata: []byte(`{"hostname":"node1","nested":{"a":[1,2]}}`)}
	if d := cmp.Diff(want, got.GetGroup(), protocmp.Transform()); d != "" {
		t.Errorf("GroupGet(node1) differs (-want +got):\n%s", d)
	}
	list, err := groupsC.GroupList(c, &rpcpb.GroupListRequest{})
	if err != nil || len(list.GetGroups()) != 2 || list.GetGroups()[0].GetId() != "default" || string(list.GetGroups()[0].GetMetadata()) != "{}" {
		t.Errorf("GroupList = %v, %v; want default (metadata {}) and node1", list, err)
	}
	gp, err := profilesC.ProfileGet(c, &rpcpb.ProfileGetRequest{Id: "p2"})
	if d := cmp.Diff(prof, gp.GetProfile(), protocmp.Transform()); err != nil || d != "" {
		t.Errorf("ProfileGet(p2) = %v; differs (-want +got):\n%s", err, d)
	}
	pl, err := profilesC.ProfileList(c, &rpcpb.ProfileListRequest{})
	if err != nil || len(pl.GetProfiles()) != 2 {
		t.Errorf("ProfileList = %v, %v; want p1, p2", pl, err)
	}
	ig, err := ignC.IgnitionGet(c, &rpcpb.IgnitionGetRequest{Name: "p2.yaml.tmpl"})
	if err != nil || string(ig.GetConfig()) != butane {
		t.Errorf("IgnitionGet = %q, %v; want the Butane as written", ig.GetConfig(), err)
	}
	gg, err := genC.GenericGet(c, &rpcpb.GenericGetRequest{Name: "p2"})
	if err != nil || string(gg.GetConfig()) != "host {{.hostname}}\n" {
		t.Errorf("GenericGet = %q, %v", gg.GetConfig(), err)
	}
	// Select normalises a hyphenated MAC, unlike matchbox.
	sg, err := selC.SelectGroup(c, &rpcpb.SelectGroupRequest{Labels: map[string]string{"mac": "52-54-00-00-00-01", "os": "installed"}})
	if err != nil || sg.GetGroup().GetId() != "node1" {
		t.Errorf("SelectGroup = %v, %v; want node1", sg, err)
	}
	sp, err := selC.SelectProfile(c, &rpcpb.SelectProfileRequest{Labels: map[string]string{"mac": mac1, "os": "installed"}})
	if err != nil || sp.GetProfile().GetId() != "p2" {
		t.Errorf("SelectProfile = %v, %v; want p2", sp, err)
	}
	if status, body := get(t, e.web+"/generic?mac="+mac1+"&os=installed"); status != 200 || body != "host node1\n" {
		t.Errorf("GET /generic after the gRPC writes = %d %q", status, body)
	}

	// A list selector travels as a JSON list in the value, both ways.
	listGroup := &rpcpb.Group{Id: "many", Profile: "p1", Selector: map[string]string{"mac": `["52:54:00:00:00:05","52:54:00:00:00:04"]`}}
	if _, err := groupsC.GroupPut(c, &rpcpb.GroupPutRequest{Group: listGroup}); err != nil {
		t.Fatalf("GroupPut(list selector): %v", err)
	}
	if g, err := groupsC.GroupGet(c, &rpcpb.GroupGetRequest{Id: "many"}); err != nil || g.GetGroup().GetSelector()["mac"] != `["52:54:00:00:00:04","52:54:00:00:00:05"]` {
		t.Errorf("GroupGet(many) selector = %v, %v", g.GetGroup().GetSelector(), err)
	}
	// ProfilePut keeps what gRPC cannot say (ipxe_template).
	if status, body := e.do(t, e.client, "PUT", "/api/v1/profiles/tp", `{"boot":{"kernel":"/kt"},"ipxe_template":"x.ipxe"}`); status != 200 {
		t.Fatalf("PUT tp = %d %s", status, body)
	}
	if _, err := profilesC.ProfilePut(c, &rpcpb.ProfilePutRequest{Profile: &rpcpb.Profile{Id: "tp", Boot: &rpcpb.NetBoot{Kernel: "/kt2"}}}); err != nil {
		t.Fatalf("ProfilePut(tp): %v", err)
	}
	if status, body := e.do(t, e.client, "GET", "/api/v1/profiles/tp", ""); !strings.Contains(body, `"ipxe_template": "x.ipxe"`) || !strings.Contains(body, `/kt2`) {
		t.Errorf("after a gRPC ProfilePut, GET tp = %d %s; want the new kernel and the old ipxe_template", status, body)
	}
	// A config-only profile: terraform-provider-matchbox sends an empty boot.
	if _, err := profilesC.ProfilePut(c, &rpcpb.ProfilePutRequest{Profile: &rpcpb.Profile{Id: "cfg", IgnitionId: "p2.yaml.tmpl", Boot: &rpcpb.NetBoot{}}}); err != nil {
		t.Errorf("ProfilePut(empty boot): %v", err)
	}

	errs := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"GroupGet missing", func() error { _, err := groupsC.GroupGet(c, &rpcpb.GroupGetRequest{Id: "nope"}); return err }, codes.NotFound, `group "nope" does not exist`},
		{"ProfileGet missing", func() error { _, err := profilesC.ProfileGet(c, &rpcpb.ProfileGetRequest{Id: "nope"}); return err }, codes.NotFound, "does not exist"},
		{"IgnitionGet missing", func() error { _, err := ignC.IgnitionGet(c, &rpcpb.IgnitionGetRequest{Name: "nope.ign"}); return err }, codes.NotFound, "ignition/nope.ign does not exist"},
		{"GenericGet missing", func() error { _, err := genC.GenericGet(c, &rpcpb.GenericGetRequest{Name: "nope"}); return err }, codes.NotFound, "generic/nope does not exist"},
		{"GroupPut nil", func() error { _, err := groupsC.GroupPut(c, &rpcpb.GroupPutRequest{}); return err }, codes.InvalidArgument, "missing"},
		{"GroupPut bad mac", func() error {
			_, err := groupsC.GroupPut(c, &rpcpb.GroupPutRequest{Group: &rpcpb.Group{Id: "b", Profile: "p1", Selector: map[string]string{"mac": "zz"}}})
			return err
		}, codes.InvalidArgument, "not a MAC address"},
		{"GroupPut escaping id", func() error {
			_, err := groupsC.GroupPut(c, &rpcpb.GroupPutRequest{Group: &rpcpb.Group{Id: "../../escape", Profile: "p1"}})
			return err
		}, codes.InvalidArgument, "not a valid id"},
		{"GroupPut metadata not an object", func() error {
			_, err := groupsC.GroupPut(c, &rpcpb.GroupPutRequest{Group: &rpcpb.Group{Id: "m", Profile: "p1", Metadata: []byte(`[1]`)}})
			return err
		}, codes.InvalidArgument, "not a JSON object"},
		{"IgnitionPut escaping name", func() error {
			_, err := ignC.IgnitionPut(c, &rpcpb.IgnitionPutRequest{Name: "../profiles/evil.json", Config: []byte(rawIgn)})
			return err
		}, codes.InvalidArgument, "not a valid file name"},
		{"IgnitionPut invalid", func() error {
			_, err := ignC.IgnitionPut(c, &rpcpb.IgnitionPutRequest{Name: "x.ign", Config: []byte(`{"ignition":{"version":"2.2.0"}}`)})
			return err
		}, codes.InvalidArgument, "invalid config"},
		{"IgnitionPut empty", func() error { _, err := ignC.IgnitionPut(c, &rpcpb.IgnitionPutRequest{Name: "x.ign"}); return err }, codes.InvalidArgument, "ignition/x.ign"},
		{"GenericPut bad template", func() error {
			_, err := genC.GenericPut(c, &rpcpb.GenericPutRequest{Name: "g", Config: []byte("{{end}}")})
			return err
		}, codes.InvalidArgument, "does not parse"},
		{"SelectGroup bad mac", func() error {
			_, err := selC.SelectGroup(c, &rpcpb.SelectGroupRequest{Labels: map[string]string{"mac": "zz"}})
			return err
		}, codes.InvalidArgument, "not a MAC address"},
	}
	for _, tt := range errs {
		err := tt.call()
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
			t.Errorf("%s: err = %v, want %v with %q", tt.name, err, tt.code, tt.msg)
		}
		if err != nil && strings.Contains(err.Error(), e.dir) {
			t.Errorf("%s: the error names a server path: %v", tt.name, err)
		}
	}
	// Deletes, twice each: the second is a no-op that succeeds.
	for range 2 {
		if _, err := groupsC.GroupDelete(c, &rpcpb.GroupDeleteRequest{Id: "node1"}); err != nil {
			t.Errorf("GroupDelete: %v", err)
		}
		if _, err := profilesC.ProfileDelete(c, &rpcpb.ProfileDeleteRequest{Id: "p2"}); err != nil {
			t.Errorf("ProfileDelete: %v", err)
		}
		if _, err := ignC.IgnitionDelete(c, &rpcpb.IgnitionDeleteRequest{Name: "p2.yaml.tmpl"}); err != nil {
			t.Errorf("IgnitionDelete: %v", err)
		}
		if _, err := genC.GenericDelete(c, &rpcpb.GenericDeleteRequest{Name: "p2"}); err != nil {
			t.Errorf("GenericDelete: %v", err)
		}
	}
	if _, err := groupsC.GroupGet(c, &rpcpb.GroupGetRequest{Id: "node1"}); status.Code(err) != codes.NotFound {
		t.Errorf("GroupGet after delete: %v, want NotFound", err)
	}
}

// TestGRPCAuth: gRPC needs a client certificate, or the token as
// "authorization: Bearer TOKEN" metadata when the server has one.
func TestGRPCAuth(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	e := start(t, options{token: token})
	none, _ := e.pki.ClientTLS(false)
	c := ctx(t)
	groupsC := rpcpb.NewGroupsClient(dial(t, e, none))
	if _, err := groupsC.GroupList(c, &rpcpb.GroupListRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GroupList without certificate or token: %v, want Unauthenticated", err)
	}
	withTok := metadata.AppendToOutgoingContext(c, "authorization", "Bearer "+token)
	if _, err := groupsC.GroupList(withTok, &rpcpb.GroupListRequest{}); err != nil {
		t.Errorf("GroupList with the token: %v", err)
	}
	other, err := apitest.NewPKI(filepath.Join(t.TempDir(), "other"), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := e.pki.ForeignClientTLS(other)
	if _, err := rpcpb.NewGroupsClient(dial(t, e, foreign)).GroupList(withTok, &rpcpb.GroupListRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GroupList with a foreign certificate: %v, want the connection refused (Unavailable)", err)
	}
}
