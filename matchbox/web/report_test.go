package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/events"
	"github.com/kindlingboot/kindling/matchbox/web"
)

func TestReports(t *testing.T) {
	c, err := catalog.Load(fstest.MapFS{
		"profiles/p.json":     {Data: []byte(`{"id":"p","boot":{"kernel":"/assets/k"}}`)},
		"groups/default.json": {Data: []byte(`{"id":"default","profile":"p"}`)},
	}, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log, reports, metrics := events.NewLog(0, 0), events.NewReports(0), web.NewMetrics()
	srv := httptest.NewServer(web.NewHandler(web.Config{
		Catalog: func() *catalog.Catalog { return c }, Events: log, Reports: reports, Metrics: metrics,
	}))
	defer srv.Close()
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	failure := `{"result":"failure","stage":"files","operation":"writing /etc/x","error":"files: writing /etc/x: exists","stages":[]}`
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"no report yet", "GET", "/report?mac=52:54:00:00:00:01", "", 404, "no report from 52:54:00:00:00:01"},
		{"success", "POST", "/report?mac=52-54-00-00-00-01", `{"result":"success","stages":[]}`, 204, ""},
		{"read back", "GET", "/report?mac=52:54:00:00:00:01", "", 200, `"result": "success"`},
		{"failure", "POST", "/report?mac=52:54:00:00:00:02&os=installed", failure, 204, ""},
		{"failure read back", "GET", "/report?mac=52:54:00:00:00:02", "", 200, `"stage": "files"`},
		{"list", "GET", "/report", "", 200, `"mac": "52:54:00:00:00:02"`},
		{"bad mac", "POST", "/report?mac=nope", `{"result":"success"}`, 400, "mac"},
		{"no mac, no lease", "POST", "/report", `{"result":"success"}`, 400, "no mac= label"},
		{"not json", "POST", "/report?mac=52:54:00:00:00:03", `result=ok`, 400, "not a JSON object"},
		{"bad result", "POST", "/report?mac=52:54:00:00:00:03", `{"result":"fine"}`, 400, `"fine"; want success, failure or skipped`},
		{"too big", "POST", "/report?mac=52:54:00:00:00:03", `{"result":"success","x":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "64 KiB"},
		{"made-up stage", "POST", "/report?mac=52:54:00:00:00:04", `{"result":"failure","stage":"x1"}`, 204, ""},
		{"other posts stay refused", "POST", "/ipxe?mac=52:54:00:00:00:03", `{}`, 405, "read-only"},
	} {
		code, body := do(tc.method, tc.path, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %s %s = %d %q, want %d containing %q", tc.name, tc.method, tc.path, code, body, tc.code, tc.want)
		}
	}
	if _, ok := reports.Get("52:54:00:00:00:03"); ok {
		t.Errorf("a rejected report was stored")
	}
	rep, _ := reports.Get("52:54:00:00:00:02")
	var body map[string]any
	if err := json.Unmarshal(rep.Body, &body); err != nil || body["operation"] != "writing /etc/x" {
		t.Errorf("stored body = %s (%v), want the agent's report as sent", rep.Body, err)
	}
	evs := log.Events("52:54:00:00:00:02")
	if len(evs) != 1 || evs[0].Step != "report failure" || !strings.Contains(evs[0].Error, "files") {
		t.Errorf("events = %+v, want one failed report event naming the stage", evs)
	}
	_, m := do("GET", "/metrics", "")
	for _, want := range []string{`kindling_agent_reports_total{result="failure",stage="files"} 1`, `kindling_agent_reports_total{result="success",stage=""} 1`, `kindling_agent_reports_total{result="failure",stage="other"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
