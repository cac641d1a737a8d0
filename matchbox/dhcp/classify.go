package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Arch is a client system architecture: the value of DHCP option 93
// (RFC 4578 §2.1, IANA "Processor Architecture Types").
type Arch int

// ArchNone means the client sent no option 93 (an operating system's DHCP
// client, not firmware).
const ArchNone Arch = -1

// Architectures Kindling boots. Names follow the IANA registry; note 7 and
// 9: RFC 4578's text swapped them, the registry (and an erratum) says 7 is
// x64 UEFI and 9 EBC, but field firmware sends both for x64 UEFI (EDK2
// sends 7, old iPXE builds 9), so Kindling treats 9 as x64 too.
const (
	ArchX86BIOS       Arch = 0
	ArchX86UEFI       Arch = 6
	ArchX64UEFI       Arch = 7
	ArchEBC           Arch = 9
	ArchARM32UEFI     Arch = 10
	ArchARM64UEFI     Arch = 11
	ArchX86UEFIHTTP   Arch = 15
	ArchX64UEFIHTTP   Arch = 16
	ArchARM64UEFIHTTP Arch = 19
)

var archNames = map[Arch]string{
	0: "x86-bios", 1: "nec-pc98", 2: "itanium-uefi", 3: "dec-alpha", 4: "arc-x86",
	5: "intel-lean-client", 6: "x86-uefi", 7: "x64-uefi", 8: "xscale-uefi",
	9:  "x64-uefi", // registry: EBC; in practice x64 UEFI (see above)
	10: "arm32-uefi", 11: "arm64-uefi", 12: "ppc-open-firmware", 13: "ppc-epapr",
	14: "power-opal-v3", 15: "x86-uefi-http", 16: "x64-uefi-http", 17: "ebc-uefi-http",
	18: "arm32-uefi-http", 19: "arm64-uefi-http", 20: "x86-bios-http",
	21: "arm32-uboot", 22: "arm64-uboot", 23: "arm32-uboot-http", 24: "arm64-uboot-http",
	25: "riscv32-uefi", 26: "riscv32-uefi-http", 27: "riscv64-uefi", 28: "riscv64-uefi-http",
	29: "riscv128-uefi", 30: "riscv128-uefi-http", 31: "s390-basic", 32: "s390-extended",
	33: "mips32-uefi", 34: "mips64-uefi", 35: "sunway32-uefi", 36: "sunway64-uefi",
	41: "arm-rpiboot",
}

// String is the architecture's short name ("x64-uefi"), "none" for
// ArchNone and "arch-N" for values outside the registry.
func (a Arch) String() string {
	if a == ArchNone {
		return "none"
	}
	if n, ok := archNames[a]; ok {
		return n
	}
	return "arch-" + strconv.Itoa(int(a))
}

// label is String for the registry's values and "other" for the rest, so
// hostile option 93 values cannot grow a metric's label set.
func (a Arch) label() string {
	if _, ok := archNames[a]; ok || a == ArchNone {
		return a.String()
	}
	return "other"
}

// Kind is what sort of network-boot client sent a request, which decides
// what it is told to load.
type Kind int

const (
	// KindNone is not a network-boot client: an installed OS, a plain
	// DHCP client. Server mode leases it an address and no boot file;
	// proxy mode ignores it.
	KindNone Kind = iota
	// KindPXE is firmware PXE (option 60 "PXEClient..."): it loads an
	// iPXE binary over TFTP.
	KindPXE
	// KindHTTP is UEFI HTTP boot (option 60 "HTTPClient..."): it loads an
	// iPXE binary by HTTP URL.
	KindHTTP
	// KindIPXE is iPXE (user class "iPXE", or option 175): it loads
	// Kindling's boot script, which breaks the chainload loop.
	KindIPXE
	// KindGRUB is GRUB (user class "GRUB2", or a vendor class starting
	// "GRUB"): it loads Kindling's GRUB config.
	KindGRUB
)

func (k Kind) String() string {
	switch k {
	case KindPXE:
		return "pxe"
	case KindHTTP:
		return "http"
	case KindIPXE:
		return "ipxe"
	case KindGRUB:
		return "grub"
	}
	return "none"
}

// Client is what Classify learns from a request.
type Client struct {
	// MAC is the client hardware address (chaddr).
	MAC net.HardwareAddr
	// Type is the DHCP message type (option 53).
	Type dhcpv4.MessageType
	// Arch is option 93's first value; ArchNone when absent.
	Arch Arch
	// Kind decides the boot file; see BootFile.
	Kind Kind
	// UserClass is option 77: RFC 3004 entries joined with ",", or the
	// raw string when the option is not a valid RFC 3004 list (iPXE sends
	// a plain "iPXE", ipxe.org/cfg/user-class).
	UserClass string
	// VendorClass is option 60, e.g. "PXEClient:Arch:00007:UNDI:003000".
	VendorClass string
	// UUID is option 97 (client machine identifier), echoed in replies to
	// PXE clients as the PXE spec requires; nil when absent.
	UUID []byte
	// IPXE is set when the request carries option 175 (iPXE's
	// encapsulated options), whatever its user class.
	IPXE bool
}

// Why packets are ignored. Classify and the server wrap these with
// details; Metrics counts them by reason.
var (
	ErrNotRequest    = errors.New("not a BOOTREQUEST")
	ErrNoMAC         = errors.New("no usable client hardware address")
	ErrNoMessageType = errors.New("no DHCP message type (option 53); plain BOOTP is not served")
	ErrNotPXE        = errors.New("not a PXE or HTTP boot client")
	ErrNoBootFile    = errors.New("no boot file for this client architecture")
	ErrOtherServer   = errors.New("addressed to another server")
	ErrRelaySubnet   = errors.New("relayed from a subnet this server does not serve")
	ErrNoAddress     = errors.New("no free address in the range")
	ErrUnsupported   = errors.New("message type not handled here")
	ErrMalformed     = errors.New("malformed packet")
)

// reasons maps each sentinel to its metric label.
var reasons = []struct {
	err    error
	reason string
}{
	{ErrMalformed, "malformed"},
	{ErrNotRequest, "not-request"},
	{ErrNoMAC, "no-mac"},
	{ErrNoMessageType, "no-message-type"},
	{ErrNotPXE, "not-pxe"},
	{ErrNoBootFile, "no-boot-file"},
	{ErrOtherServer, "other-server"},
	{ErrRelaySubnet, "relay-subnet"},
	{ErrNoAddress, "no-address"},
	{ErrUnsupported, "unsupported"},
	{errPersist, "persist"},
	{errSend, "send"},
}

var (
	errPersist = errors.New("lease file write failed")
	errSend    = errors.New("sending reply failed")
)

// reason is err's metric label.
func reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// Classify reads what kind of boot client sent req. It never panics on
// any input; an error says why the packet is to be ignored.
func Classify(req *dhcpv4.DHCPv4) (Client, error) {
	var c Client
	if req == nil {
		return c, ErrMalformed
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return c, fmt.Errorf("%w: op %d", ErrNotRequest, req.OpCode)
	}
	if len(req.ClientHWAddr) == 0 || allZero(req.ClientHWAddr) {
		return c, fmt.Errorf("%w: chaddr %q (hlen %d)", ErrNoMAC, req.ClientHWAddr.String(), len(req.ClientHWAddr))
	}
	c.MAC = append(net.HardwareAddr(nil), req.ClientHWAddr...)
	c.Type = req.MessageType()
	if c.Type == dhcpv4.MessageTypeNone {
		return c, ErrNoMessageType
	}
	c.Arch = ArchNone
	if v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 {
		c.Arch = Arch(binary.BigEndian.Uint16(v))
	}
	c.VendorClass = printable(req.Options.Get(dhcpv4.OptionClassIdentifier))
	c.UserClass = userClass(req.Options.Get(dhcpv4.OptionUserClassInformation))
	if v := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(v) > 0 {
		c.UUID = append([]byte(nil), v...)
	}
	c.IPXE = req.Options.Has(optIPXEEncap)
	c.Kind = kindOf(c)
	return c, nil
}

// optIPXEEncap is option 175, iPXE's encapsulated options (iPXE sends it
// with its feature flags; dnsmasq recipes match on it).
const optIPXEEncap = dhcpv4.GenericOptionCode(175)

func kindOf(c Client) Kind {
	switch {
	case hasClass(c.UserClass, "iPXE") || c.IPXE:
		return KindIPXE
	case hasClass(c.UserClass, "GRUB2") || strings.HasPrefix(c.VendorClass, "GRUB"):
		return KindGRUB
	case strings.HasPrefix(c.VendorClass, "HTTPClient"):
		return KindHTTP
	case strings.HasPrefix(c.VendorClass, "PXEClient"):
		return KindPXE
	}
	return KindNone
}

func hasClass(list, class string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == class {
			return true
		}
	}
	return false
}

// userClass decodes option 77 leniently: an RFC 3004 list (length-prefixed
// entries filling the option exactly) is joined with ","; anything else is
// taken as one raw string, which is what iPXE sends.
func userClass(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	var parts []string
	for rest := b; len(rest) > 0; {
		n := int(rest[0])
		if n == 0 || n+1 > len(rest) {
			return printable(b)
		}
		parts = append(parts, printable(rest[1:1+n]))
		rest = rest[1+n:]
	}
	return strings.Join(parts, ",")
}

// printable is b as a string with NULs trimmed and non-printable bytes
// replaced, so hostile option bytes never reach logs raw.
func printable(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return strings.Map(func(r rune) rune {
				if r < 0x20 || r > 0x7e {
					return '?'
				}
				return r
			}, string(b))
		}
	}
	return string(b)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// BootFiles names the iPXE binaries handed to firmware. The zero value
// means the defaults: undionly.kpxe, ipxe.efi, ipxe-arm64.efi.
type BootFiles struct {
	// BIOS is for x86 BIOS PXE (option 93 = 0); "" = undionly.kpxe.
	BIOS string
	// UEFIx64 is for x64 UEFI (93 = 7 or 9, and HTTP boot 16);
	// "" = ipxe.efi, or snponly.efi when UseSNP is set.
	UEFIx64 string
	// UEFIarm64 is for arm64 UEFI (93 = 11, and HTTP boot 19);
	// "" = ipxe-arm64.efi.
	UEFIarm64 string
	// UseSNP gives x64 UEFI clients snponly.efi (iPXE driving the NIC
	// through the firmware's SNP) unless UEFIx64 names a file.
	UseSNP bool
}

func (b BootFiles) bios() string { return or(b.BIOS, "undionly.kpxe") }
func (b BootFiles) x64() string {
	if b.UEFIx64 == "" && b.UseSNP {
		return "snponly.efi"
	}
	return or(b.UEFIx64, "ipxe.efi")
}
func (b BootFiles) arm64() string { return or(b.UEFIarm64, "ipxe-arm64.efi") }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// What a boot-table row hands out.
type bootTarget int

const (
	targetBIOS   bootTarget = iota // BootFiles.BIOS over TFTP
	targetX64                      // BootFiles.UEFIx64 (TFTP, or its asset URL for HTTP boot)
	targetARM64                    // BootFiles.UEFIarm64 (likewise)
	targetScript                   // http://SERVER:PORT/boot.ipxe
	targetGRUB                     // http://SERVER:PORT/grub
)

// anyArch in a row matches every architecture, including ArchNone.
const anyArch Arch = -2

// bootTable is THE boot-file table: the first row matching the client's
// kind and architecture decides. A client matching no row gets no boot
// file: proxy mode does not answer it (logged at debug); server mode
// leases it an address without one (an unknown architecture would not run
// an x86 binary, and an OS's DHCP client wants none).
var bootTable = []struct {
	kind   Kind
	arch   Arch
	target bootTarget
}{
	// iPXE, whatever its platform, chains to the boot script; this breaks
	// the firmware → iPXE → DHCP → iPXE loop (ipxe.org/howto/chainloading)
	// and covers ROMs that are already iPXE (no undionly.kpxe over UNDI).
	{KindIPXE, anyArch, targetScript},
	// GRUB (builds that identify themselves; upstream GRUB sends no
	// user class) gets matchbox's /grub endpoint.
	{KindGRUB, anyArch, targetGRUB},
	{KindPXE, ArchX86BIOS, targetBIOS},
	{KindPXE, ArchX64UEFI, targetX64},
	{KindPXE, ArchEBC, targetX64},
	{KindPXE, ArchARM64UEFI, targetARM64},
	// UEFI HTTP boot wants a URL, and option 60 "HTTPClient" in the
	// reply (EDK2 HttpBootDxe discards offers without it).
	{KindHTTP, ArchX64UEFIHTTP, targetX64},
	{KindHTTP, ArchARM64UEFIHTTP, targetARM64},
}

// BootFile is what client c is told to load: a TFTP file name
// (httpURL false) or an HTTP URL on ServerIP:HTTPPort (httpURL true); ""
// when the table has no row for it. It reads only BootFiles, ServerIP and
// HTTPPort.
func (cfg *Config) BootFile(c Client) (file string, httpURL bool) {
	for _, row := range bootTable {
		if row.kind != c.Kind || (row.arch != anyArch && row.arch != c.Arch) {
			continue
		}
		switch row.target {
		case targetScript:
			return cfg.httpBase() + "/boot.ipxe", true
		case targetGRUB:
			return cfg.httpBase() + "/grub", true
		}
		var name string
		switch row.target {
		case targetBIOS:
			name = cfg.BootFiles.bios()
		case targetX64:
			name = cfg.BootFiles.x64()
		case targetARM64:
			name = cfg.BootFiles.arm64()
		}
		if c.Kind == KindHTTP {
			return cfg.httpBase() + "/assets/ipxe/" + name, true
		}
		return name, false
	}
	return "", false
}

func (cfg *Config) httpBase() string {
	port := cfg.HTTPPort
	if port == 0 {
		port = 8080
	}
	host := "0.0.0.0"
	if ip := cfg.ServerIP.To4(); ip != nil {
		host = ip.String()
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port))
}
