package events

import (
	"fmt"
	"testing"
)

func TestLogBounds(t *testing.T) {
	l := NewLog(3, 2)
	for i := 0; i < 5; i++ {
		l.Record(Event{MAC: "52:54:00:00:00:01", Step: fmt.Sprint(i)})
	}
	got := l.Events("52:54:00:00:00:01")
	if len(got) != 3 || got[0].Step != "2" || got[2].Step != "4" {
		t.Errorf("Events after 5 records with perMAC 3 = %v, want steps 2,3,4", got)
	}
	l.Record(Event{MAC: "52:54:00:00:00:02"})
	l.Record(Event{MAC: "52:54:00:00:00:03"})
	if l.Events("52:54:00:00:00:01") != nil {
		t.Error("least recently seen machine kept beyond the machine bound")
	}
	if macs := l.MACs(); len(macs) != 2 || macs[0] != "52:54:00:00:00:03" {
		t.Errorf("MACs() = %v", macs)
	}
	l.Record(Event{Step: "no mac"})
	if len(l.MACs()) != 2 {
		t.Error("event without MAC recorded")
	}
}
