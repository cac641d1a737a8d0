package web

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/events"
)

// maxReport bounds a report body; real ones are a few KiB. With the
// 10,000 machines events.Reports keeps, reports hold at most ~640 MiB even
// when every one is a forged maximum (the machine plane is unauthenticated).
const maxReport = 64 << 10

// reportStages are the agent's stage names; any other failing stage is
// counted as "other", so forged reports cannot create metric series.
var reportStages = map[string]bool{"setup": true, "fetch": true, "install": true, "disks": true, "mount": true, "files": true, "umount": true, "report": true}

// postReport records an agent's provisioning report: POST /report?mac=…
// with the report as a JSON object whose "result" is success, failure or
// skipped. The machine is named by its mac label (or, without one, by the
// DHCP lease of the sender's address), like /ignition.
func (s *server) postReport(w http.ResponseWriter, r *http.Request) {
	if s.Reports == nil {
		text(w, http.StatusNotFound, "404 not found: agent reports are not recorded by this server\n")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
		return
	}
	labels, err := groups.FromQuery(q)
	if err != nil {
		text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
		return
	}
	ip := remoteIP(r)
	mac := labels["mac"]
	if mac == "" {
		mac = s.macFor(ip)
	}
	if mac == "" {
		text(w, http.StatusBadRequest, "400 bad request: no mac= label, and the sender's address has no DHCP lease to name the machine\n")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReport))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			text(w, http.StatusRequestEntityTooLarge, "413 request entity too large: a report is at most 64 KiB\n")
			return
		}
		text(w, http.StatusBadRequest, "400 bad request: reading the report: "+err.Error()+"\n")
		return
	}
	var head struct {
		Result string `json:"result"`
		Stage  string `json:"stage"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		text(w, http.StatusBadRequest, "400 bad request: the report is not a JSON object: "+err.Error()+"\n")
		return
	}
	switch head.Result {
	case "success", "failure", "skipped":
	default:
		text(w, http.StatusBadRequest, "400 bad request: report field \"result\" is "+quote(head.Result)+"; want success, failure or skipped\n")
		return
	}
	rep := events.Report{MAC: mac, IP: ip, Received: time.Now().UTC(), Result: head.Result, Stage: head.Stage, Error: head.Error, Body: json.RawMessage(body)}
	s.Reports.Put(rep)
	stage := head.Stage
	switch {
	case head.Result != "failure":
		stage = ""
	case !reportStages[stage]:
		stage = "other"
	}
	s.Metrics.AgentReports.WithLabelValues(head.Result, stage).Inc()
	ev := events.Event{MAC: mac, Source: "agent", Step: "report " + head.Result, IP: ip}
	if head.Result == "failure" {
		ev.Error = head.Stage + ": " + head.Error
		s.Logger.Error("agent report: provisioning failed", "mac", mac, "ip", ip, "stage", head.Stage, "err", head.Error)
	} else {
		s.Logger.Info("agent report", "mac", mac, "ip", ip, "result", head.Result)
	}
	s.record(ev)
	w.WriteHeader(http.StatusNoContent)
}

// getReport serves the latest report of a machine (GET /report?mac=…), or
// every machine's latest report without mac.
func (s *server) getReport(w http.ResponseWriter, r *http.Request) {
	if s.Reports == nil {
		text(w, http.StatusNotFound, "404 not found: agent reports are not recorded by this server\n")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
		return
	}
	var body any
	if raw := q.Get("mac"); raw != "" {
		mac, err := groups.NormalizeValue("mac", raw)
		if err != nil {
			text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
			return
		}
		rep, ok := s.Reports.Get(mac)
		if !ok {
			text(w, http.StatusNotFound, "404 not found: no report from "+mac+" yet\n")
			return
		}
		body = rep
	} else {
		body = s.Reports.All()
	}
	writeJSON(w, body)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
