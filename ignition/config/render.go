package config

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/coreos/ignition/v2/config/v3_6"
	"github.com/coreos/ignition/v2/config/v3_6/types"

	"github.com/kindlingboot/kindling/ignition/fetch"
)

// MaxDepth bounds how deep fetched configs may nest (a child of a child
// …), so a config that includes itself fails instead of looping.
const MaxDepth = 10

// Render returns cfg with its children fetched and folded in:
//
//   - If ignition.config.replace has a source, the config fetched from it
//     replaces cfg entirely and is rendered in turn.
//   - Otherwise each ignition.config.merge[i] is fetched, rendered
//     (depth-first) and merged into the config in list order with
//     v3_6.Merge; the child wins.
//
// Before fetching anything, the fetcher gets the timeouts, proxy and
// certificate authorities of the config as merged so far (a child's own
// settings apply to its children); it is left set up for the rendered
// config, ready for the files stage. Errors name the field and URL, like
// `ignition.config.merge[1].source "http://…": 404 Not Found`, nested
// configs adding `in <field> "<url>": ` in front. The result still lists
// the references it was rendered from (as upstream's rendered configs do);
// render it only once. Log nil discards.
func Render(ctx context.Context, cfg types.Config, f *fetch.Fetcher, log *slog.Logger) (types.Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &renderer{f: f, log: log, cas: map[string]bool{}}
	out, err := r.render(ctx, cfg, types.Config{}, 0)
	if err != nil {
		return types.Config{}, err
	}
	if err := r.apply(ctx, out.Ignition); err != nil {
		return types.Config{}, err
	}
	return out, nil
}

type renderer struct {
	f   *fetch.Fetcher
	log *slog.Logger
	cas map[string]bool // CA sources already added to the fetcher

	applied *fetcherSettings // last timeouts and proxy given to the fetcher
}

type fetcherSettings struct {
	timeouts types.Timeouts
	proxy    types.Proxy
}

// render renders cfg found at nesting depth; outer is everything merged
// above it, whose settings cfg's own settings override.
func (r *renderer) render(ctx context.Context, cfg, outer types.Config, depth int) (types.Config, error) {
	if err := r.apply(ctx, v3_6.Merge(outer, cfg).Ignition); err != nil {
		return types.Config{}, err
	}
	if rep := cfg.Ignition.Config.Replace; rep.Source != nil && *rep.Source != "" {
		const field = "ignition.config.replace.source"
		child, err := r.child(ctx, field, rep, depth)
		if err != nil {
			return types.Config{}, err
		}
		out, err := r.render(ctx, child, outer, depth+1)
		if err != nil {
			return types.Config{}, fmt.Errorf("in %s %q: %w", field, fetch.Redact(*rep.Source), err)
		}
		return out, nil
	}
	merged := cfg
	for i, res := range cfg.Ignition.Config.Merge {
		if res.Source == nil || *res.Source == "" {
			continue // the validator rejects this; nothing to fetch
		}
		field := fmt.Sprintf("ignition.config.merge[%d].source", i)
		above := v3_6.Merge(outer, merged)
		if err := r.apply(ctx, above.Ignition); err != nil {
			return types.Config{}, err
		}
		child, err := r.child(ctx, field, res, depth)
		if err != nil {
			return types.Config{}, err
		}
		child, err = r.render(ctx, child, above, depth+1)
		if err != nil {
			return types.Config{}, fmt.Errorf("in %s %q: %w", field, fetch.Redact(*res.Source), err)
		}
		merged = v3_6.Merge(merged, child)
	}
	return merged, nil
}

// child fetches and parses the config referenced by res at field.
func (r *renderer) child(ctx context.Context, field string, res types.Resource, depth int) (types.Config, error) {
	src := fetch.Redact(*res.Source)
	if depth+1 > MaxDepth {
		return types.Config{}, fmt.Errorf("%s %q: configs nested more than %d deep (does a config include itself?)", field, src, MaxDepth)
	}
	data, err := r.f.FetchField(ctx, field, res)
	if err != nil {
		return types.Config{}, err
	}
	cfg, problems, err := Parse(data)
	for _, p := range problems {
		r.log.Warn("config problem", "field", field, "url", src, "problem", p.String())
	}
	if err != nil {
		return types.Config{}, fmt.Errorf("%s %q: %w", field, src, err)
	}
	r.log.Info("fetched config", "field", field, "url", src, "bytes", len(data), "depth", depth+1)
	return cfg, nil
}

// apply gives the fetcher the timeouts, proxy and certificate authorities
// of ign, fetching each CA not fetched before.
func (r *renderer) apply(ctx context.Context, ign types.Ignition) error {
	s := &fetcherSettings{timeouts: ign.Timeouts, proxy: ign.Proxy}
	if r.applied == nil || !reflect.DeepEqual(*r.applied, *s) {
		r.f.SetTimeouts(ign.Timeouts)
		if err := r.f.SetProxy(ign.Proxy); err != nil {
			return fmt.Errorf("ignition.proxy: %w", err)
		}
		r.applied = s
	}
	for i, ca := range ign.Security.TLS.CertificateAuthorities {
		if ca.Source == nil || *ca.Source == "" || r.cas[*ca.Source] {
			continue
		}
		field := fmt.Sprintf("ignition.security.tls.certificateAuthorities[%d].source", i)
		pem, err := r.f.FetchField(ctx, field, ca)
		if err != nil {
			return err
		}
		if err := r.f.AddCA(pem); err != nil {
			return fmt.Errorf("%s %q: %w", field, fetch.Redact(*ca.Source), err)
		}
		r.cas[*ca.Source] = true
		r.log.Info("added certificate authority", "field", field, "url", fetch.Redact(*ca.Source))
	}
	return nil
}
