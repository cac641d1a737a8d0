package dhcp

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

const (
	// offerHold is how long an offered address stays reserved for the
	// client it was offered to, waiting for its REQUEST.
	offerHold = 60 * time.Second
	// declineHold is how long an address a client DECLINEd (RFC 2131
	// §4.3.3: someone else answers ARP for it) stays out of use.
	declineHold = 10 * time.Minute
)

// lease is one address's record. Leases are keyed by hardware address,
// not by client identifier (option 61): firmware PXE, iPXE and the
// installed OS send different client identifiers (or none) for the same
// NIC, and a provisioning server wants the machine to keep one address
// through its whole boot (like Kea's match-client-id false).
type lease struct {
	ip       uint32
	mac      string // lower-case colon form; "" for a declined address
	hostname string
	expires  time.Time
	// bound is set once the lease has been ACKed; only bound (and
	// declined) records are written to the lease file. Offers live in
	// memory only.
	bound bool
	// line caches the record's lease-file line; whoever changes the
	// record (under the table lock) sets it to nil.
	line []byte
}

func (l *lease) active(now time.Time) bool { return l.expires.After(now) }

// leaseTable is the server-mode address table. Records are never deleted
// except when their address is reused: an expired lease still remembers
// its MAC, so a client coming back after expiry gets its old address
// unless someone else needed it.
//
// Addresses in the range live in a dense slot array (one pointer per
// address), so allocation scans and lease-file snapshots walk memory in
// address order with no map lookups or sorting; the few reserved
// addresses outside the range sit in a map.
type leaseTable struct {
	start, end uint32          // the range, inclusive
	skip       map[uint32]bool // addresses never handed out (ours, the router's, network, broadcast)
	subnet     *net.IPNet

	mu      sync.Mutex
	slots   []*lease          // slots[ip-start] for ip in the range
	outside map[uint32]*lease // records for reserved addresses outside the range
	byMAC   map[string]*lease
	inUse   int    // records inside the range
	cursor  uint32 // where the next free-address scan starts
}

// maxRange bounds the range size (the slot array is 8 bytes per address).
const maxRange = 1 << 20

func newLeaseTable(start, end uint32, subnet *net.IPNet, skip ...net.IP) *leaseTable {
	t := &leaseTable{
		start: start, end: end, subnet: subnet, cursor: start,
		skip:    map[uint32]bool{},
		slots:   make([]*lease, int(end-start)+1),
		outside: map[uint32]*lease{},
		byMAC:   map[string]*lease{},
	}
	for _, ip := range skip {
		if ip4 := ip.To4(); ip4 != nil {
			t.skip[ipToU32(ip4)] = true
		}
	}
	network := ipToU32(subnet.IP.To4())
	ones, bits := subnet.Mask.Size()
	if bits-ones >= 2 {
		t.skip[network] = true
		t.skip[network|^ipToU32(net.IP(subnet.Mask).To4())] = true
	}
	return t
}

func (t *leaseTable) inRange(ip uint32) bool { return ip >= t.start && ip <= t.end }

func (t *leaseTable) size() int { return len(t.slots) }

// get is the record for ip, nil if none. t.mu must be held.
func (t *leaseTable) get(ip uint32) *lease {
	if t.inRange(ip) {
		return t.slots[ip-t.start]
	}
	return t.outside[ip]
}

// put records l, replacing whatever held its address or its MAC.
// t.mu must be held.
func (t *leaseTable) put(l *lease) {
	if old := t.get(l.ip); old != nil {
		t.remove(old)
	}
	if l.mac != "" {
		if old := t.byMAC[l.mac]; old != nil {
			t.remove(old)
		}
		t.byMAC[l.mac] = l
	}
	if t.inRange(l.ip) {
		t.slots[l.ip-t.start] = l
		t.inUse++
	} else {
		t.outside[l.ip] = l
	}
}

// remove forgets l. t.mu must be held.
func (t *leaseTable) remove(l *lease) {
	if t.get(l.ip) == l {
		if t.inRange(l.ip) {
			t.slots[l.ip-t.start] = nil
			t.inUse--
		} else {
			delete(t.outside, l.ip)
		}
	}
	if l.mac != "" && t.byMAC[l.mac] == l {
		delete(t.byMAC, l.mac)
	}
}

// availableFor reports whether ip may be given to mac: nobody holds it,
// mac itself does, or its holder's lease (or decline hold) has expired.
// t.mu must be held.
func (t *leaseTable) availableFor(ip uint32, mac string, now time.Time) bool {
	if t.skip[ip] {
		return false
	}
	l := t.get(ip)
	return l == nil || l.mac == mac || !l.active(now)
}

// allocate picks an address from the range: a never-used one first
// (scanning on from the last one handed out), else the one whose lease
// expired longest ago. t.mu must be held.
func (t *leaseTable) allocate(now time.Time) (uint32, bool) {
	n := len(t.slots)
	if t.inUse < n {
		i := int(t.cursor - t.start)
		for range n {
			if i >= n {
				i = 0
			}
			ip := t.start + uint32(i)
			if t.slots[i] == nil && !t.skip[ip] {
				t.cursor = ip + 1
				return ip, true
			}
			i++
		}
	}
	var oldest *lease
	for _, l := range t.slots {
		if l != nil && !l.active(now) && !t.skip[l.ip] && (oldest == nil || l.expires.Before(oldest.expires)) {
			oldest = l
		}
	}
	if oldest == nil {
		return 0, false
	}
	return oldest.ip, true
}

// each calls fn for every record, in address order within the range and
// then the outside records (unordered). t.mu must be held.
func (t *leaseTable) each(fn func(*lease)) {
	for _, l := range t.slots {
		if l != nil {
			fn(l)
		}
	}
	for _, l := range t.outside {
		fn(l)
	}
}

// macFor is the MAC holding (or last holding) ip, "" if none.
func (t *leaseTable) macFor(ip uint32) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.get(ip); l != nil {
		return l.mac
	}
	return ""
}

// bound counts bound, unexpired leases.
func (t *leaseTable) bound(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	t.each(func(l *lease) {
		if l.bound && l.mac != "" && l.active(now) {
			n++
		}
	})
	return n
}

// The lease file: JSON, one object per lease, sorted by address.
type leaseFile struct {
	Version int         `json:"version"`
	Leases  []fileLease `json:"leases"`
}

type fileLease struct {
	IP       string    `json:"ip"`
	MAC      string    `json:"mac,omitempty"`
	Hostname string    `json:"hostname,omitempty"`
	Expires  time.Time `json:"expires"`
	// Declined marks an address a client declined; it has no MAC.
	Declined bool `json:"declined,omitempty"`
}

// snapshot encodes the persistent records (bound leases and declined
// addresses) in address order. Under t.mu it encodes only the records
// changed since the last snapshot and collects the cached lines (a walk
// of the slot array); the O(n) copy into the file image happens after.
//
// The image is appended to dst[:0] and lines reuses scratch, so the
// committer's buffers are recycled between writes instead of allocating
// megabytes per batch.
func (t *leaseTable) snapshot(dst []byte, scratch [][]byte) ([]byte, [][]byte) {
	t.mu.Lock()
	lines := scratch[:0]
	size := 0
	collect := func(l *lease) {
		if !l.bound && l.mac != "" {
			return // an offer
		}
		if l.line == nil {
			l.line = l.appendJSON(nil)
		}
		lines = append(lines, l.line)
		size += len(l.line) + 2
	}
	for _, l := range t.slots {
		if l != nil {
			collect(l)
		}
	}
	out := make([]*lease, 0, len(t.outside))
	for _, l := range t.outside {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *lease) int { return cmp.Compare(a.ip, b.ip) })
	for _, l := range out {
		collect(l)
	}
	t.mu.Unlock()
	b := slices.Grow(dst[:0], 32+size)
	b = append(b, "{\"version\":1,\"leases\":["...)
	for i, line := range lines {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '\n')
		b = append(b, line...)
	}
	b = append(b, "\n]}\n"...)
	clear(lines) // drop references to old lines
	return b, lines
}

// appendJSON appends l as one lease-file JSON object. Hand-rolled: it is
// several times faster than encoding/json, and only the hostname needs
// quoting (the other fields are machine-formatted).
func (l *lease) appendJSON(b []byte) []byte {
	b = append(b, "{\"ip\":\""...)
	b = u32ToAddr(l.ip).AppendTo(b)
	b = append(b, '"')
	if l.mac != "" {
		b = append(b, ",\"mac\":\""...)
		b = append(b, l.mac...)
		b = append(b, '"')
	}
	if l.hostname != "" {
		h, _ := json.Marshal(l.hostname)
		b = append(b, ",\"hostname\":"...)
		b = append(b, h...)
	}
	b = append(b, ",\"expires\":\""...)
	b = l.expires.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, '"')
	if l.mac == "" {
		b = append(b, ",\"declined\":true"...)
	}
	return append(b, '}')
}

// load reads a lease file written by snapshot. A missing file is an
// empty table; records outside the subnet are dropped (the subnet
// changed) and reported in the returned count.
func (t *leaseTable) load(path string) (loaded, dropped int, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("reading lease file: %w", err)
	}
	var f leaseFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return 0, 0, fmt.Errorf("reading lease file %s: %w", path, err)
	}
	if f.Version != 1 {
		return 0, 0, fmt.Errorf("reading lease file %s: version %d, want 1", path, f.Version)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, fl := range f.Leases {
		ip := net.ParseIP(fl.IP).To4()
		if ip == nil {
			return 0, 0, fmt.Errorf("reading lease file %s: lease %d: bad ip %q", path, i, fl.IP)
		}
		var mac string
		if fl.MAC != "" {
			hw, err := net.ParseMAC(fl.MAC)
			if err != nil {
				return 0, 0, fmt.Errorf("reading lease file %s: lease %d: %w", path, i, err)
			}
			mac = hw.String()
		} else if !fl.Declined {
			return 0, 0, fmt.Errorf("reading lease file %s: lease %d (%s): no mac", path, i, fl.IP)
		}
		if !t.subnet.Contains(ip) {
			dropped++
			continue
		}
		t.put(&lease{ip: ipToU32(ip), mac: mac, hostname: fl.Hostname, expires: fl.Expires, bound: mac != ""})
		loaded++
	}
	return loaded, dropped, nil
}

// writeFileAtomic replaces path with data durably: a temp file in the same
// directory, fsync, rename, fsync of the directory (so the rename itself
// survives a crash).
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func ipToU32(ip net.IP) uint32 {
	ip4 := ip.To4()
	if ip4 == nil {
		return 0
	}
	return binary.BigEndian.Uint32(ip4)
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func u32ToIP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// ipString is a compact string for logs ("" for nil/zero).
func ipString(ip net.IP) string {
	if ip == nil || ip.IsUnspecified() {
		return ""
	}
	return ip.String()
}
