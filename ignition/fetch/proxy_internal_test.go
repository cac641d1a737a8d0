package fetch

import (
	"net/url"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// TestProxyChoice checks which requests go through which proxy: the
// httpproxy rules (scheme, noProxy domains and CIDRs, loopback never).
func TestProxyChoice(t *testing.T) {
	s := func(v string) *string { return &v }
	f, err := New(Options{Proxy: types.Proxy{
		HTTPProxy:  s("http://proxy.lan:3128"),
		HTTPSProxy: s("http://secure-proxy.lan:3129"),
		NoProxy:    []types.NoProxyItem{"internal.example", "10.0.0.0/8", ".svc.lan"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ target, want string }{
		{"http://config.example/a", "http://proxy.lan:3128"},
		{"https://config.example/a", "http://secure-proxy.lan:3129"},
		{"http://internal.example/a", ""},
		{"http://host.internal.example/a", ""},
		{"http://10.1.2.3/a", ""},
		{"http://11.1.2.3/a", "http://proxy.lan:3128"},
		{"http://a.svc.lan/a", ""},
		{"http://127.0.0.1:8080/a", ""},
		{"http://localhost/a", ""},
	}
	for _, tc := range tests {
		u, _ := url.Parse(tc.target)
		got, err := f.proxy(u)
		if err != nil {
			t.Fatalf("proxy(%s) error: %v", tc.target, err)
		}
		gs := ""
		if got != nil {
			gs = got.String()
		}
		if gs != tc.want {
			t.Errorf("proxy(%s) = %q, want %q", tc.target, gs, tc.want)
		}
	}

	// The zero value turns the proxy off.
	if err := f.SetProxy(types.Proxy{}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://config.example/a")
	if got, _ := f.proxy(u); got != nil {
		t.Errorf("after SetProxy(zero) proxy(%s) = %v, want direct", u, got)
	}
}
