package dhcp

import (
	"fmt"
	"log/slog"
	"sync"
)

// committer makes lease changes durable before their ACKs go out, with
// group commit: while one write of the lease file is in flight, further
// changes and their replies queue; the next write covers all of them and
// releases all their replies. A burst of N leases costs about one write
// per write-latency, not N writes, and no ACK is ever sent for a lease
// that a crash could lose.
type committer struct {
	path  string
	table *leaseTable

	// buf and lines are the snapshot buffers, reused between writes
	// (only the run goroutine touches them).
	buf   []byte
	lines [][]byte

	mu      sync.Mutex
	pending []*answer // replies waiting for the next durable write
	dirty   bool      // the table changed since the last write
	wake    chan struct{}
}

func newCommitter(path string, t *leaseTable) *committer {
	return &committer{path: path, table: t, wake: make(chan struct{}, 1)}
}

// submit queues a reply to be sent once the change behind it is on disk.
func (c *committer) submit(a *answer) {
	c.mu.Lock()
	c.pending = append(c.pending, a)
	c.dirty = true
	c.mu.Unlock()
	c.signal()
}

// touch asks for a write with no reply waiting on it (release, decline).
func (c *committer) touch() {
	c.mu.Lock()
	c.dirty = true
	c.mu.Unlock()
	c.signal()
}

func (c *committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run writes batches until stop is closed, then writes once more if
// anything changed. Replies of a batch go to send after the write, or to
// drop if it failed (the client will retry).
func (c *committer) run(stop <-chan struct{}, send func(*answer), drop func(*answer, error), log *slog.Logger) {
	for {
		select {
		case <-c.wake:
		case <-stop:
			c.flush(send, drop, log)
			return
		}
		c.flush(send, drop, log)
	}
}

// flush writes the table if it changed and releases the waiting replies.
// The batch is taken before the snapshot, so every change behind a
// batched reply is in the snapshot written.
func (c *committer) flush(send func(*answer), drop func(*answer, error), log *slog.Logger) {
	c.mu.Lock()
	batch, dirty := c.pending, c.dirty
	c.pending, c.dirty = nil, false
	c.mu.Unlock()
	if !dirty {
		return
	}
	c.buf, c.lines = c.table.snapshot(c.buf, c.lines)
	if err := writeFileAtomic(c.path, c.buf); err != nil {
		log.Error("dhcp lease file write failed; replies withheld", "path", c.path, "replies", len(batch), "error", err.Error())
		for _, a := range batch {
			drop(a, fmt.Errorf("%w: %v", errPersist, err))
		}
		// Try again on the next change rather than spinning on a broken disk.
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		return
	}
	for _, a := range batch {
		send(a)
	}
}
