// Example 05: a network filter whose port list an untrusted process edits,
// with no other access to the filter.
//
// This process (the trusted side) loads an XDP program
// (bpf/port_filter.bpf.c) that passes IPv4/IPv6 TCP and UDP packets whose
// destination port is in the "ports" map and drops the others. It hands a
// write-only descriptor of "ports" to the editor (this binary again, role
// "editor", as uid 65534 when run as root) over a Unix socket
// (SCM_RIGHTS): that descriptor is all the editor holds. The editor adds
// and removes ports when told to; after each change the trusted side runs
// the program (BPF_PROG_TEST_RUN) on crafted packets and prints the
// verdicts. The editor cannot read the map (lookup, next key, dump: EPERM),
// cannot even load a program that reads it through its descriptor
// (EACCES), and has no descriptor of the program, so it can neither run,
// inspect nor replace it.
//
// Run bpfd first (`make run`), then `go run ./examples/05-port-filter`.
// With the argument "live" (as root) the same program decides real TCP and
// UDP traffic between two network namespaces through a netfilter queue
// (live.go).
package main

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/examples/internal/demo"
	"github.com/bpfd-project/bpfd/pkg/client"
)

//go:embed bpf/port_filter.bpf.o
var filterELF []byte

// controlFD is the editor's end of the control socket: the first of
// exec.Cmd.ExtraFiles.
const controlFD = 3

func main() {
	if len(os.Args) > 1 && os.Args[1] == "editor" {
		if err := editor(); err != nil {
			fmt.Fprintln(os.Stderr, "05-port-filter editor:", err)
			os.Exit(1)
		}
		return
	}
	liveMode := len(os.Args) > 1 && os.Args[1] == "live"
	if err := run(liveMode); err != nil {
		fmt.Fprintln(os.Stderr, "05-port-filter:", err)
		os.Exit(1)
	}
}

func run(liveMode bool) error {
	c, err := client.Dial("")
	if err != nil {
		return err
	}
	defer c.Close()

	ports, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 2, ValueSize: 1, MaxEntries: 256, Name: "ports"})
	if err != nil {
		return err
	}
	defer ports.Close()
	filter, err := demo.LoadProgram(c, filterELF, "port_filter", map[string]*client.Map{"ports": ports})
	if err != nil {
		return err
	}
	defer filter.Close()
	fmt.Printf("loaded %v program %q; ports map created\n", filter.Type(), "port_filter")
	if liveMode {
		return live(c, ports, filter)
	}
	return runEditor(ports, func() error { return verdicts(ports, filter) })
}

// runEditor starts the untrusted editor, gives it a write-only descriptor
// of ports, has it edit the port list and calls show after each edit.
func runEditor(ports *client.Map, show func() error) error {
	// A SOCK_SEQPACKET pair: one message per command, and the editor's
	// descriptor travels on it as SCM_RIGHTS.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socketpair", err)
	}
	theirs := os.NewFile(uintptr(pair[1]), "editor control")
	mineFile := os.NewFile(uintptr(pair[0]), "control")
	fc, err := net.FileConn(mineFile)
	mineFile.Close()
	if err != nil {
		theirs.Close()
		return err
	}
	control := fc.(*net.UnixConn)
	defer control.Close()

	cmd := demo.Untrusted("editor")
	cmd.ExtraFiles = []*os.File{theirs}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return err
	}
	err = converse(control, ports, show)
	control.Close() // the editor sees EOF and exits
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("editor: %w", werr)
	}
	return err
}

// converse gives the editor its write-only descriptor, then has it edit the
// port list and shows the verdicts after each edit.
func converse(control *net.UnixConn, ports *client.Map, show func() error) error {
	wo, err := ports.Reopen(client.ModeWrite)
	if err != nil {
		return err
	}
	err = client.SendDescriptors(control, wo.FD())
	wo.Close() // the only copy left is the editor's
	if err != nil {
		return err
	}
	fmt.Println("sent the editor a write-only descriptor of \"ports\"")

	ask := func(req string) error {
		if _, err := control.Write([]byte(req)); err != nil {
			return err
		}
		buf := make([]byte, 256)
		n, err := control.Read(buf)
		if err != nil {
			return err
		}
		if reply := string(buf[:n]); reply != "ok" {
			return fmt.Errorf("editor: %s: %s", req, reply)
		}
		return nil
	}
	// The editor reports what its descriptor does not allow, then "ok".
	if err := ask("hello"); err != nil {
		return err
	}
	if err := show(); err != nil {
		return err
	}
	for _, req := range []string{"add 443", "add 53", "del 443"} {
		fmt.Println("editor:", req)
		if err := ask(req); err != nil {
			return err
		}
		if err := show(); err != nil {
			return err
		}
	}
	return nil
}

// packets are the crafted frames the trusted side tests the filter on.
var packets = []struct {
	name string
	data []byte
}{
	{"tcp4:443", frame(4, unix.IPPROTO_TCP, 443)},
	{"udp4:53", frame(4, unix.IPPROTO_UDP, 53)},
	{"tcp6:443", frame(6, unix.IPPROTO_TCP, 443)},
	{"udp6:53", frame(6, unix.IPPROTO_UDP, 53)},
	{"tcp6:22", frame(6, unix.IPPROTO_TCP, 22)},
}

// verdicts prints the ports in the map (the trusted side can read it) and
// what the program decides for each crafted packet (BPF_PROG_TEST_RUN).
func verdicts(ports *client.Map, filter *client.Program) error {
	list, err := portList(ports)
	if err != nil {
		return err
	}
	var out []string
	for _, p := range packets {
		ret, err := filter.Run(&client.RunOptions{Data: p.data})
		if err != nil {
			return err
		}
		v := map[uint32]string{1: "DROP", 2: "PASS"}[ret] // XDP_DROP, XDP_PASS
		if v == "" {
			v = strconv.Itoa(int(ret))
		}
		out = append(out, p.name+"="+v)
	}
	fmt.Printf("  ports %v: %s\n", list, strings.Join(out, " "))
	return nil
}

// portList returns the ports in the map, sorted.
func portList(ports *client.Map) ([]int, error) {
	var list []int
	it := ports.Iterate()
	k := make([]byte, 2)
	for it.Next(k, nil) {
		list = append(list, int(binary.NativeEndian.Uint16(k)))
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	slices.Sort(list)
	return list, nil
}

// frame builds an Ethernet frame carrying an IPv4 or IPv6 packet with a
// TCP or UDP header for destination port dport.
func frame(ipVersion int, proto uint8, dport uint16) []byte {
	var l4 []byte
	if proto == unix.IPPROTO_TCP {
		l4 = make([]byte, 20)
		l4[12] = 5 << 4 // data offset: 5 words
		l4[13] = 0x02   // SYN
	} else {
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], 8) // length
	}
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], dport)

	eth := make([]byte, 14) // zero MAC addresses
	var ip []byte
	if ipVersion == 4 {
		binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IP)
		ip = make([]byte, 20)
		ip[0] = 0x45 // version 4, 5-word header
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		ip[8], ip[9] = 64, proto
		copy(ip[12:], []byte{192, 0, 2, 1})
		copy(ip[16:], []byte{192, 0, 2, 2})
	} else {
		binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IPV6)
		ip = make([]byte, 40)
		ip[0] = 0x60 // version 6
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = proto, 64
		copy(ip[8:], net.ParseIP("2001:db8::1"))
		copy(ip[24:], net.ParseIP("2001:db8::2"))
	}
	return slices.Concat(eth, ip, l4)
}
