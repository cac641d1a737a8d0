package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/events"
	"github.com/kindlingboot/kindling/profiles"
)

// maxBody bounds a request body (an Ignition config with inline files
// can be large).
const maxBody = 16 << 20

// newJSON is the JSON API under /api/v1/.
func (s *Server) newJSON() http.Handler {
	r := chi.NewRouter()
	r.Use(s.httpAuth)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no such API endpoint: %s %s (the API is under /api/v1/)", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{errMethod, "method " + r.Method + " is not allowed on " + r.URL.Path})
	})
	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/groups", s.listGroups)
		r.Get("/groups/{id}", s.getGroup)
		r.Put("/groups/{id}", s.putGroup)
		r.Delete("/groups/{id}", s.deleteGroup)
		r.Get("/profiles", s.listProfiles)
		r.Get("/profiles/{id}", s.getProfile)
		r.Put("/profiles/{id}", s.putProfile)
		r.Delete("/profiles/{id}", s.deleteProfile)
		for _, dir := range []string{"ignition", "generic"} {
			r.Get("/"+dir, s.listFiles(dir))
			r.Get("/"+dir+"/{name}", s.getFile(dir))
			r.Put("/"+dir+"/{name}", s.putFile(dir))
			r.Delete("/"+dir+"/{name}", s.deleteFile(dir))
		}
		r.Get("/select", s.selectHandler)
		r.Get("/events", s.eventsHandler)
		r.Get("/reports", s.reportsHandler)
	})
	return r
}

// errMethod is a method the endpoint does not have (405).
var errMethod = errors.New("method not allowed")

// httpAuth admits a request with a verified client certificate, or with
// "Authorization: Bearer TOKEN" when the server has a token, and logs
// every request with its outcome.
func (s *Server) httpAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		client, err := s.authenticate(r.TLS, r.Header.Get("Authorization"))
		if err != nil {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "control plane: refused", slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.String("ip", remoteIP(r.RemoteAddr)), slog.String("error", err.Error()))
			w.Header().Set("WWW-Authenticate", `Bearer realm="kindling"`)
			writeError(w, err)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		level := slog.LevelInfo
		switch {
		case rec.status >= 500:
			level = slog.LevelError
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			level = slog.LevelDebug
		}
		attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", rec.status),
			slog.String("client", client), slog.String("ip", remoteIP(r.RemoteAddr)), slog.Duration("took", time.Since(start))}
		if rec.err != "" {
			attrs = append(attrs, slog.String("error", rec.err))
		}
		s.log.LogAttrs(r.Context(), level, "control plane", attrs...)
	})
}

// statusRecorder remembers the status and error a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
	err    string
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// errorBody is the JSON API's error answer.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeError answers err with its status and {"error", "code"}.
func writeError(w http.ResponseWriter, err error) {
	c, msg := errorCode(err)
	if errors.Is(err, errMethod) {
		c, msg = code{c.grpc, http.StatusMethodNotAllowed, codeInvalid.name}, err.Error()
	}
	if rec, ok := w.(*statusRecorder); ok {
		rec.err = err.Error() // the full error, for the log only
	}
	writeJSON(w, c.http, errorBody{Error: msg, Code: c.name})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: internalMessage, Code: codeInternal.name})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// param is a path parameter, unescaped (chi matches the raw path, so
// %2F arrives escaped).
func param(r *http.Request, name string) (string, error) {
	v, err := url.PathUnescape(chi.URLParam(r, name))
	if err != nil {
		return "", invalid("%s in the URL: %v", name, err)
	}
	return v, nil
}

// readBody reads a request body of at most maxBody bytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, invalid("request body is larger than %d MiB", maxBody>>20)
	}
	if err != nil {
		return nil, invalid("reading the request body: %v", err)
	}
	return b, nil
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	gs := s.svc.groupList()
	if gs == nil {
		gs = []*groups.Group{}
	}
	writeJSON(w, http.StatusOK, gs)
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "id")
	if err != nil {
		writeError(w, err)
		return
	}
	g, err := s.svc.group(id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, g)
}

// putGroup takes the group file's JSON; its "id" may be left out.
func (s *Server) putGroup(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "id")
	if err == nil {
		err = checkID("group", id)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	g, err := catalog.DecodeGroup(body)
	if err != nil {
		writeError(w, invalid("group %q: %v", id, err))
		return
	}
	if err := sameID("group", id, &g.ID); err != nil {
		writeError(w, err)
		return
	}
	stored, err := s.svc.putGroup(g)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, stored)
}

// sameID fills in an omitted id, or checks it equals the URL's.
func sameID(kind, url string, body *string) error {
	switch *body {
	case "":
		*body = url
	case url:
	default:
		return invalid("%s: field \"id\" is %q but the URL names %q; leave it out or make them equal", kind, *body, url)
	}
	return nil
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "id")
	if err == nil {
		err = s.svc.deleteGroup(id)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listProfiles(w http.ResponseWriter, r *http.Request) {
	ps := s.svc.profileList()
	out := make([]*profiles.Profile, 0, len(ps))
	for _, p := range ps {
		out = append(out, &p.Profile)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "id")
	if err != nil {
		writeError(w, err)
		return
	}
	p, err := s.svc.profile(id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, &p.Profile)
}

func (s *Server) putProfile(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "id")
	if err == nil {
		err = checkID("profile", id)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	p, err := catalog.DecodeProfile(body)
	if err != nil {
		writeError(w, invalid("profile %q: %v", id, err))
		return
	}
	if err := sameID("profile", id, &p.ID); err != nil {
		writeError(w, err)
		return
	}
	stored, err := s.svc.putProfile(p, false)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, &stored.Profile)
}

func (s *Server) deleteProfile(w http.ResponseWriter, r *http.Request) {
	id, err := param(r, "id")
	if err == nil {
		err = s.svc.deleteProfile(id)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listFiles(dir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.svc.fileList(dir))
	}
}

func (s *Server) getFile(dir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, err := param(r, "name")
		if err != nil {
			writeError(w, err)
			return
		}
		b, err := s.svc.file(dir, name)
		if err != nil {
			writeError(w, err)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	}
}

func (s *Server) putFile(dir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, err := param(r, "name")
		if err == nil {
			err = checkName(dir, name)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		body, err := readBody(w, r)
		if err == nil {
			err = s.svc.putFile(dir, name, body)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) deleteFile(dir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, err := param(r, "name")
		if err == nil {
			err = s.svc.deleteFile(dir, name)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// selection is GET /select's answer.
type selection struct {
	Group   *groups.Group     `json:"group"`
	Profile *profiles.Profile `json:"profile"`
}

// selectHandler answers which group and profile a machine with the
// query's labels gets, as the machine plane's /ipxe would choose.
func (s *Server) selectHandler(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, invalid("query: %v", err))
		return
	}
	labels, err := groups.FromQuery(q)
	if err != nil {
		writeError(w, invalid("labels: %v", err))
		return
	}
	g, p, err := s.svc.match(labels)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, selection{Group: g, Profile: &p.Profile})
}

// eventsHandler is the machine plane's GET /events, authenticated: a
// machine's boot events oldest first with ?mac=, else the MACs seen.
func (s *Server) eventsHandler(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Events == nil {
		writeError(w, notFound("this server records no boot events"))
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, invalid("query: %v", err))
		return
	}
	raw := q.Get("mac")
	if raw == "" {
		writeJSON(w, http.StatusOK, map[string][]string{"macs": s.cfg.Events.MACs()})
		return
	}
	mac, err := groups.NormalizeValue("mac", raw)
	if err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	evs := s.cfg.Events.Events(mac)
	if evs == nil {
		evs = []events.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// reportsHandler serves the agents' latest reports, as the machine
// plane's GET /report does: one machine's with ?mac=, else every one,
// sorted by MAC.
func (s *Server) reportsHandler(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Reports == nil {
		writeError(w, notFound("this server keeps no agent reports"))
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, invalid("query: %v", err))
		return
	}
	raw := q.Get("mac")
	if raw == "" {
		writeJSON(w, http.StatusOK, s.cfg.Reports.All())
		return
	}
	mac, err := groups.NormalizeValue("mac", raw)
	if err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	rep, ok := s.cfg.Reports.Get(mac)
	if !ok {
		writeError(w, notFound("no report from %s yet", mac))
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
