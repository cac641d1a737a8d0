//go:build tools

package discovery

// The v3 tests build an etcd binary from go.etcd.io/etcd/server/v3 (its
// main package, etcdmain). Nothing else imports it, so without this
// never-compiled import `go mod tidy` would drop the go.sum entries that
// build needs, and it would fail on a fresh clone.
import _ "go.etcd.io/etcd/server/v3/etcdmain"
