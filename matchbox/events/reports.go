package events

import (
	"container/list"
	"encoding/json"
	"sort"
	"sync"
	"time"
)

// Report is the latest provisioning report an agent sent for a machine.
// Body is the agent's report as it sent it (a JSON object); Result and
// Stage are read from it for listings and metrics.
type Report struct {
	MAC      string          `json:"mac"`
	IP       string          `json:"ip,omitempty"`
	Received time.Time       `json:"received"`
	Result   string          `json:"result"`
	Stage    string          `json:"stage,omitempty"`
	Error    string          `json:"error,omitempty"`
	Body     json.RawMessage `json:"report"`
}

// Reports keeps the latest report per machine, for at most a bounded
// number of machines (the least recently reporting are dropped). Safe for
// concurrent use.
type Reports struct {
	max int

	mu    sync.Mutex
	byMAC map[string]*list.Element // → Report
	lru   *list.List
}

// NewReports keeps reports of at most machines MACs (0 means 10,000).
func NewReports(machines int) *Reports {
	if machines <= 0 {
		machines = 10000
	}
	return &Reports{max: machines, byMAC: map[string]*list.Element{}, lru: list.New()}
}

// Put stores r as the latest report of r.MAC.
func (s *Reports) Put(r Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byMAC[r.MAC]; ok {
		e.Value = r
		s.lru.MoveToFront(e)
		return
	}
	s.byMAC[r.MAC] = s.lru.PushFront(r)
	for s.lru.Len() > s.max {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.byMAC, old.Value.(Report).MAC)
	}
}

// Get returns the latest report of mac.
func (s *Reports) Get(mac string) (Report, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byMAC[mac]
	if !ok {
		return Report{}, false
	}
	return e.Value.(Report), true
}

// All returns every stored report, sorted by MAC.
func (s *Reports) All() []Report {
	s.mu.Lock()
	out := make([]Report, 0, s.lru.Len())
	for e := s.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(Report))
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}
