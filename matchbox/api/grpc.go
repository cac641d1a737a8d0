package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/api/rpcpb"
	"github.com/kindlingboot/kindling/profiles"
)

// maxMessage bounds a gRPC message: an Ignition config with inline files
// can be large.
const maxMessage = 16 << 20

// newGRPC registers the matchbox-compatible services on a gRPC server that
// authenticates every call (see Server.authenticate) and logs it.
func (s *Server) newGRPC() *grpc.Server {
	g := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.MaxSendMsgSize(maxMessage),
		grpc.ChainUnaryInterceptor(s.grpcAuth),
	)
	rpcpb.RegisterGroupsServer(g, groupsServer{svc: s.svc})
	rpcpb.RegisterProfilesServer(g, profilesServer{svc: s.svc})
	rpcpb.RegisterIgnitionServer(g, configServer{svc: s.svc, dir: "ignition"})
	rpcpb.RegisterGenericServer(g, genericServer{svc: s.svc, dir: "generic"})
	rpcpb.RegisterSelectServer(g, selectServer{svc: s.svc})
	return g
}

// grpcAuth admits a call with a verified client certificate, or with the
// API token as "authorization: Bearer TOKEN" metadata, and logs it.
func (s *Server) grpcAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	var authz string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authz = v[0]
		}
	}
	var p *peer.Peer
	if pp, ok := peer.FromContext(ctx); ok {
		p = pp
	}
	client, err := s.authenticate(tlsStateOf(p), authz)
	method := info.FullMethod
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "control plane: refused", slog.String("rpc", method), slog.String("ip", peerIP(p)), slog.String("error", err.Error()))
		return nil, grpcError(err)
	}
	resp, err := handler(ctx, req)
	attrs := []slog.Attr{slog.String("rpc", method), slog.String("client", client), slog.String("ip", peerIP(p)), slog.Duration("took", time.Since(start))}
	if err != nil {
		c, _ := errorCode(err)
		attrs = append(attrs, slog.String("code", c.grpc.String()), slog.String("error", err.Error()))
		level := slog.LevelInfo
		if c == codeInternal {
			level = slog.LevelError
		}
		s.log.LogAttrs(ctx, level, "control plane", attrs...)
		return nil, grpcError(err)
	}
	level := slog.LevelInfo
	if isRead(method) {
		level = slog.LevelDebug
	}
	s.log.LogAttrs(ctx, level, "control plane", attrs...)
	return resp, nil
}

// isRead reports whether a method only reads (logged at debug).
func isRead(method string) bool {
	i := strings.LastIndexByte(method, '/')
	m := method[i+1:]
	return strings.HasSuffix(m, "Get") || strings.HasSuffix(m, "List") || strings.HasPrefix(m, "Select")
}

type groupsServer struct {
	rpcpb.UnimplementedGroupsServer
	svc *service
}

func (g groupsServer) GroupPut(_ context.Context, req *rpcpb.GroupPutRequest) (*rpcpb.GroupPutResponse, error) {
	if req.GetGroup() == nil {
		return nil, invalid("group: missing from the request")
	}
	grp, err := groupFromPB(req.GetGroup())
	if err != nil {
		return nil, err
	}
	if _, err := g.svc.putGroup(grp); err != nil {
		return nil, err
	}
	return &rpcpb.GroupPutResponse{}, nil
}

func (g groupsServer) GroupGet(_ context.Context, req *rpcpb.GroupGetRequest) (*rpcpb.GroupGetResponse, error) {
	grp, err := g.svc.group(req.GetId())
	if err != nil {
		return nil, err
	}
	return &rpcpb.GroupGetResponse{Group: groupToPB(grp)}, nil
}

func (g groupsServer) GroupDelete(_ context.Context, req *rpcpb.GroupDeleteRequest) (*rpcpb.GroupDeleteResponse, error) {
	if err := g.svc.deleteGroup(req.GetId()); err != nil {
		return nil, err
	}
	return &rpcpb.GroupDeleteResponse{}, nil
}

func (g groupsServer) GroupList(context.Context, *rpcpb.GroupListRequest) (*rpcpb.GroupListResponse, error) {
	gs := g.svc.groupList()
	out := &rpcpb.GroupListResponse{Groups: make([]*rpcpb.Group, 0, len(gs))}
	for _, grp := range gs {
		out.Groups = append(out.Groups, groupToPB(grp))
	}
	return out, nil
}

type profilesServer struct {
	rpcpb.UnimplementedProfilesServer
	svc *service
}

func (p profilesServer) ProfilePut(_ context.Context, req *rpcpb.ProfilePutRequest) (*rpcpb.ProfilePutResponse, error) {
	if req.GetProfile() == nil {
		return nil, invalid("profile: missing from the request")
	}
	if _, err := p.svc.putProfile(profileFromPB(req.GetProfile()), true); err != nil {
		return nil, err
	}
	return &rpcpb.ProfilePutResponse{}, nil
}

func (p profilesServer) ProfileGet(_ context.Context, req *rpcpb.ProfileGetRequest) (*rpcpb.ProfileGetResponse, error) {
	prof, err := p.svc.profile(req.GetId())
	if err != nil {
		return nil, err
	}
	return &rpcpb.ProfileGetResponse{Profile: profileToPB(&prof.Profile)}, nil
}

func (p profilesServer) ProfileDelete(_ context.Context, req *rpcpb.ProfileDeleteRequest) (*rpcpb.ProfileDeleteResponse, error) {
	if err := p.svc.deleteProfile(req.GetId()); err != nil {
		return nil, err
	}
	return &rpcpb.ProfileDeleteResponse{}, nil
}

func (p profilesServer) ProfileList(context.Context, *rpcpb.ProfileListRequest) (*rpcpb.ProfileListResponse, error) {
	ps := p.svc.profileList()
	out := &rpcpb.ProfileListResponse{Profiles: make([]*rpcpb.Profile, 0, len(ps))}
	for _, prof := range ps {
		out.Profiles = append(out.Profiles, profileToPB(&prof.Profile))
	}
	return out, nil
}

// configServer serves Ignition files by name (genericServer, Generic).
type configServer struct {
	rpcpb.UnimplementedIgnitionServer
	svc *service
	dir string
}

func (c configServer) IgnitionPut(_ context.Context, req *rpcpb.IgnitionPutRequest) (*rpcpb.IgnitionPutResponse, error) {
	if err := c.svc.putFile(c.dir, req.GetName(), req.GetConfig()); err != nil {
		return nil, err
	}
	return &rpcpb.IgnitionPutResponse{}, nil
}

func (c configServer) IgnitionGet(_ context.Context, req *rpcpb.IgnitionGetRequest) (*rpcpb.IgnitionGetResponse, error) {
	b, err := c.svc.file(c.dir, req.GetName())
	if err != nil {
		return nil, err
	}
	return &rpcpb.IgnitionGetResponse{Config: b}, nil
}

func (c configServer) IgnitionDelete(_ context.Context, req *rpcpb.IgnitionDeleteRequest) (*rpcpb.IgnitionDeleteResponse, error) {
	if err := c.svc.deleteFile(c.dir, req.GetName()); err != nil {
		return nil, err
	}
	return &rpcpb.IgnitionDeleteResponse{}, nil
}

type genericServer struct {
	rpcpb.UnimplementedGenericServer
	svc *service
	dir string
}

func (g genericServer) GenericPut(_ context.Context, req *rpcpb.GenericPutRequest) (*rpcpb.GenericPutResponse, error) {
	if err := g.svc.putFile(g.dir, req.GetName(), req.GetConfig()); err != nil {
		return nil, err
	}
	return &rpcpb.GenericPutResponse{}, nil
}

func (g genericServer) GenericGet(_ context.Context, req *rpcpb.GenericGetRequest) (*rpcpb.GenericGetResponse, error) {
	b, err := g.svc.file(g.dir, req.GetName())
	if err != nil {
		return nil, err
	}
	return &rpcpb.GenericGetResponse{Config: b}, nil
}

func (g genericServer) GenericDelete(_ context.Context, req *rpcpb.GenericDeleteRequest) (*rpcpb.GenericDeleteResponse, error) {
	if err := g.svc.deleteFile(g.dir, req.GetName()); err != nil {
		return nil, err
	}
	return &rpcpb.GenericDeleteResponse{}, nil
}

type selectServer struct {
	rpcpb.UnimplementedSelectServer
	svc *service
}

func (s selectServer) SelectGroup(_ context.Context, req *rpcpb.SelectGroupRequest) (*rpcpb.SelectGroupResponse, error) {
	labels, err := labelsFromMap(req.GetLabels())
	if err != nil {
		return nil, err
	}
	// The group is the answer even when its profile is missing.
	g, _, err := s.svc.match(labels)
	if g == nil {
		return nil, err
	}
	return &rpcpb.SelectGroupResponse{Group: groupToPB(g)}, nil
}

func (s selectServer) SelectProfile(_ context.Context, req *rpcpb.SelectProfileRequest) (*rpcpb.SelectProfileResponse, error) {
	labels, err := labelsFromMap(req.GetLabels())
	if err != nil {
		return nil, err
	}
	_, p, err := s.svc.match(labels)
	if err != nil {
		return nil, err
	}
	return &rpcpb.SelectProfileResponse{Profile: profileToPB(&p.Profile)}, nil
}

// labelsFromMap normalises gRPC labels as the machine plane does query
// labels (matchbox left MACs as given here, so a hyphenated MAC missed
// its group).
func labelsFromMap(m map[string]string) (groups.Labels, error) {
	q := make(map[string][]string, len(m))
	for k, v := range m {
		q[k] = []string{v}
	}
	l, err := groups.FromQuery(q)
	if err != nil {
		return nil, invalid("labels: %v", err)
	}
	return l, nil
}

// groupToPB is a group as matchbox's clients read it. A selector that
// accepts several values carries them as a JSON list in the value; the
// metadata is a JSON object, "{}" when there is none (so clients that
// decode it always can).
func groupToPB(g *groups.Group) *rpcpb.Group {
	sel := make(map[string]string, len(g.Selector))
	for k, vs := range g.Selector {
		if len(vs) == 1 {
			sel[k] = vs[0]
			continue
		}
		b, _ := json.Marshal(vs)
		sel[k] = string(b)
	}
	md := []byte("{}")
	if len(g.Metadata) > 0 {
		if b, err := json.Marshal(g.Metadata); err == nil {
			md = b
		}
	}
	return &rpcpb.Group{Id: g.ID, Name: g.Name, Profile: g.Profile, Selector: sel, Metadata: md}
}

// groupFromPB is groupToPB's inverse: a selector value that is a JSON
// list of strings is a list; metadata must be a JSON object (or empty).
func groupFromPB(pg *rpcpb.Group) (groups.Group, error) {
	g := groups.Group{ID: pg.GetId(), Name: pg.GetName(), Profile: pg.GetProfile()}
	if len(pg.GetSelector()) > 0 {
		g.Selector = make(groups.Selector, len(pg.GetSelector()))
		for k, v := range pg.GetSelector() {
			var list []string
			if strings.HasPrefix(v, "[") && json.Unmarshal([]byte(v), &list) == nil && len(list) > 0 {
				g.Selector[k] = list
				continue
			}
			g.Selector[k] = []string{v}
		}
	}
	if md := bytes.TrimSpace(pg.GetMetadata()); len(md) > 0 && !bytes.Equal(md, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(md))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return g, invalid("group %q: field \"metadata\": not a JSON object: %v", g.ID, err)
		}
		if dec.More() {
			return g, invalid("group %q: field \"metadata\": more than one JSON value", g.ID)
		}
		if len(m) > 0 {
			g.Metadata = m
		}
	}
	return g, nil
}

// profileToPB is a profile as matchbox's clients read it; ipxe_template
// and grub_template have no field there.
func profileToPB(p *profiles.Profile) *rpcpb.Profile {
	out := &rpcpb.Profile{Id: p.ID, Name: p.Name, IgnitionId: p.IgnitionID, CloudId: p.CloudID, GenericId: p.GenericID}
	if p.Boot != nil {
		out.Boot = &rpcpb.NetBoot{Kernel: p.Boot.Kernel, Initrd: p.Boot.Initrd, Args: p.Boot.Args}
	}
	return out
}

// profileFromPB is profileToPB's inverse. A boot section with no kernel,
// initrd or args (terraform-provider-matchbox sends one for config-only
// profiles) is no boot section.
func profileFromPB(pp *rpcpb.Profile) profiles.Profile {
	p := profiles.Profile{ID: pp.GetId(), Name: pp.GetName(), IgnitionID: pp.GetIgnitionId(), CloudID: pp.GetCloudId(), GenericID: pp.GetGenericId()}
	if b := pp.GetBoot(); b != nil && (b.GetKernel() != "" || len(b.GetInitrd()) > 0 || len(b.GetArgs()) > 0) {
		p.Boot = &profiles.Boot{Kernel: b.GetKernel(), Initrd: b.GetInitrd(), Args: b.GetArgs()}
	}
	return p
}

func sortedLabelKeys(l groups.Labels) []string {
	ks := make([]string, 0, len(l))
	for k := range l {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
