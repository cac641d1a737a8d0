// Package events keeps each machine's recent boot events in memory — DHCP
// answers, TFTP transfers, HTTP boot steps — so an operator can see how far
// a machine got (GET /events?mac=…). It is bounded: the last N events per
// MAC, and at most M machines (the least recently seen are dropped).
package events

import (
	"container/list"
	"strings"
	"sync"
	"time"
)

// Event is one step of a machine's boot.
type Event struct {
	Time time.Time `json:"time"`
	// MAC is the machine's hardware address, lower-case colon form.
	MAC string `json:"mac"`
	// Source is the protocol: "dhcp", "tftp" or "http".
	Source string `json:"source"`
	// Step names what happened, e.g. "offer", "ack", "proxy-offer",
	// "transfer", "boot.ipxe", "ipxe", "ignition", "asset".
	Step string `json:"step"`
	// IP is the machine's address as seen or assigned, if known.
	IP string `json:"ip,omitempty"`
	// Arch is the client architecture (DHCP option 93 name or iPXE's).
	Arch string `json:"arch,omitempty"`
	// File is the boot file, TFTP file or HTTP path involved.
	File string `json:"file,omitempty"`
	// Group and Profile are the machine's match, for HTTP steps.
	Group   string `json:"group,omitempty"`
	Profile string `json:"profile,omitempty"`
	// Error says why the step failed; empty on success.
	Error string `json:"error,omitempty"`
}

// Recorder receives events; *Log is the real one. A nil Recorder func is
// never called by the protocol packages (they check).
type Recorder interface {
	Record(Event)
}

// Log is a bounded in-memory event store, safe for concurrent use.
type Log struct {
	perMAC   int
	machines int

	mu    sync.Mutex
	byMAC map[string]*list.Element // → *machine in lru
	lru   *list.List               // front: most recently seen
}

type machine struct {
	mac    string
	events []Event // ring, oldest first once full
	next   int
	full   bool
}

// NewLog keeps the last perMAC events for each of at most machines MACs;
// zero values mean 50 and 10,000.
func NewLog(perMAC, machines int) *Log {
	if perMAC <= 0 {
		perMAC = 50
	}
	if machines <= 0 {
		machines = 10_000
	}
	return &Log{perMAC: perMAC, machines: machines, byMAC: make(map[string]*list.Element), lru: list.New()}
}

// Record stores e. Events without a MAC are dropped: they belong to no
// machine.
func (l *Log) Record(e Event) {
	if e.MAC == "" {
		return
	}
	e.MAC = strings.ToLower(e.MAC)
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.byMAC[e.MAC]
	if ok {
		l.lru.MoveToFront(el)
	} else {
		el = l.lru.PushFront(&machine{mac: e.MAC, events: make([]Event, 0, 8)})
		l.byMAC[e.MAC] = el
		if l.lru.Len() > l.machines {
			old := l.lru.Back()
			l.lru.Remove(old)
			delete(l.byMAC, old.Value.(*machine).mac)
		}
	}
	m := el.Value.(*machine)
	if len(m.events) < l.perMAC {
		m.events = append(m.events, e)
		return
	}
	m.events[m.next] = e
	m.next = (m.next + 1) % l.perMAC
	m.full = true
}

// Events returns mac's events, oldest first (nil if none).
func (l *Log) Events(mac string) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.byMAC[strings.ToLower(mac)]
	if !ok {
		return nil
	}
	m := el.Value.(*machine)
	out := make([]Event, 0, len(m.events))
	if m.full {
		out = append(out, m.events[m.next:]...)
		out = append(out, m.events[:m.next]...)
	} else {
		out = append(out, m.events...)
	}
	return out
}

// MACs returns the MACs with events, most recently seen first.
func (l *Log) MACs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, l.lru.Len())
	for el := l.lru.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*machine).mac)
	}
	return out
}
