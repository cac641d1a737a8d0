// Command matchboxclient drives a server through matchbox v0.11.0's own Go
// client (github.com/poseidon/matchbox/matchbox/client), for Kindling's
// compatibility tests. It runs in a process of its own because a binary
// cannot link both matchbox's generated protobuf types and Kindling's
// (they share full names).
//
// It dials once, then reads one command per line on stdin,
//
//	{"rpc": "GroupPut", "request": {"group": {"id": "node1", …}}}
//
// (requests in the JSON form of matchbox's Go types: bytes fields are
// base64), and answers each with one line on stdout:
//
//	{"code": "OK", "message": "", "response": {…}}
//
// A failed dial prints {"dial_error": "…"} and exits 1.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/status"

	"github.com/poseidon/matchbox/matchbox/client"
	"github.com/poseidon/matchbox/matchbox/server/serverpb"
)

type call func(ctx context.Context, c *client.Client, req json.RawMessage) (any, error)

// rpc adapts one typed client method to a call.
func rpc[Req any, Resp any](f func(context.Context, *client.Client, *Req) (*Resp, error)) call {
	return func(ctx context.Context, c *client.Client, raw json.RawMessage) (any, error) {
		req := new(Req)
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, req); err != nil {
				return nil, fmt.Errorf("decoding the request: %w", err)
			}
		}
		return f(ctx, c, req)
	}
}

var calls = map[string]call{
	"GroupPut": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GroupPutRequest) (*serverpb.GroupPutResponse, error) {
		return c.Groups.GroupPut(ctx, r)
	}),
	"GroupGet": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GroupGetRequest) (*serverpb.GroupGetResponse, error) {
		return c.Groups.GroupGet(ctx, r)
	}),
	"GroupDelete": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GroupDeleteRequest) (*serverpb.GroupDeleteResponse, error) {
		return c.Groups.GroupDelete(ctx, r)
	}),
	"GroupList": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GroupListRequest) (*serverpb.GroupListResponse, error) {
		return c.Groups.GroupList(ctx, r)
	}),
	"ProfilePut": rpc(func(ctx context.Context, c *client.Client, r *serverpb.ProfilePutRequest) (*serverpb.ProfilePutResponse, error) {
		return c.Profiles.ProfilePut(ctx, r)
	}),
	"ProfileGet": rpc(func(ctx context.Context, c *client.Client, r *serverpb.ProfileGetRequest) (*serverpb.ProfileGetResponse, error) {
		return c.Profiles.ProfileGet(ctx, r)
	}),
	"ProfileDelete": rpc(func(ctx context.Context, c *client.Client, r *serverpb.ProfileDeleteRequest) (*serverpb.ProfileDeleteResponse, error) {
		return c.Profiles.ProfileDelete(ctx, r)
	}),
	"ProfileList": rpc(func(ctx context.Context, c *client.Client, r *serverpb.ProfileListRequest) (*serverpb.ProfileListResponse, error) {
		return c.Profiles.ProfileList(ctx, r)
	}),
	"IgnitionPut": rpc(func(ctx context.Context, c *client.Client, r *serverpb.IgnitionPutRequest) (*serverpb.IgnitionPutResponse, error) {
		return c.Ignition.IgnitionPut(ctx, r)
	}),
	"IgnitionGet": rpc(func(ctx context.Context, c *client.Client, r *serverpb.IgnitionGetRequest) (*serverpb.IgnitionGetResponse, error) {
		return c.Ignition.IgnitionGet(ctx, r)
	}),
	"IgnitionDelete": rpc(func(ctx context.Context, c *client.Client, r *serverpb.IgnitionDeleteRequest) (*serverpb.IgnitionDeleteResponse, error) {
		return c.Ignition.IgnitionDelete(ctx, r)
	}),
	"GenericPut": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GenericPutRequest) (*serverpb.GenericPutResponse, error) {
		return c.Generic.GenericPut(ctx, r)
	}),
	"GenericGet": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GenericGetRequest) (*serverpb.GenericGetResponse, error) {
		return c.Generic.GenericGet(ctx, r)
	}),
	"GenericDelete": rpc(func(ctx context.Context, c *client.Client, r *serverpb.GenericDeleteRequest) (*serverpb.GenericDeleteResponse, error) {
		return c.Generic.GenericDelete(ctx, r)
	}),
	"SelectGroup": rpc(func(ctx context.Context, c *client.Client, r *serverpb.SelectGroupRequest) (*serverpb.SelectGroupResponse, error) {
		return c.Select.SelectGroup(ctx, r)
	}),
	"SelectProfile": rpc(func(ctx context.Context, c *client.Client, r *serverpb.SelectProfileRequest) (*serverpb.SelectProfileResponse, error) {
		return c.Select.SelectProfile(ctx, r)
	}),
}

type command struct {
	RPC     string          `json:"rpc"`
	Request json.RawMessage `json:"request"`
}

type answer struct {
	Code     string `json:"code"`
	Message  string `json:"message"`
	Response any    `json:"response,omitempty"`
}

func main() {
	endpoint := flag.String("endpoint", "", "server HOST:PORT")
	caFile := flag.String("ca-file", "", "CA bundle (PEM) that signed the server's certificate")
	certFile := flag.String("cert-file", "", "client certificate (PEM); empty: none")
	keyFile := flag.String("key-file", "", "client key (PEM)")
	dialTimeout := flag.Duration("dial-timeout", 10*time.Second, "how long to try to connect")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	fail := func(format string, args ...any) {
		out.Encode(map[string]string{"dial_error": fmt.Sprintf(format, args...)})
		os.Exit(1)
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fail("%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail("%s: no certificate", *caFile)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail("%v", err)
		}
		// Present it whatever CAs the server asks for, so a certificate
		// from another CA really reaches the server.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	c, err := client.New(&client.Config{Endpoints: []string{*endpoint}, DialTimeout: *dialTimeout, TLS: tc})
	if err != nil {
		fail("%v", err)
	}
	defer c.Close()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		var cmd command
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			out.Encode(answer{Code: "Client", Message: "decoding the command: " + err.Error()})
			continue
		}
		f, ok := calls[cmd.RPC]
		if !ok {
			out.Encode(answer{Code: "Client", Message: "unknown rpc " + cmd.RPC})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := f(ctx, c, cmd.Request)
		cancel()
		if err != nil {
			st := status.Convert(err)
			out.Encode(answer{Code: st.Code().String(), Message: st.Message()})
			continue
		}
		out.Encode(answer{Code: "OK", Response: resp})
	}
}
