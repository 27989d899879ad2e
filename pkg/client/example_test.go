package client_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/demux"
)

// startDaemon runs an in-process bpfd for an example and returns its socket
// path and a function that stops it. Real programs Dial("") the system
// daemon instead.
func startDaemon() (string, func()) {
	dir, err := os.MkdirTemp("", "bpfd-example-")
	if err != nil {
		log.Fatal(err)
	}
	path := filepath.Join(dir, "bpfd.sock")
	srv, err := demux.NewServer(&demux.Config{Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	return path, func() {
		srv.Shutdown(context.Background())
		os.RemoveAll(dir)
	}
}

func key(k uint32) []byte   { return binary.LittleEndian.AppendUint32(nil, k) }
func value(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// Create a hash map, store a value and read it back.
func Example() {
	path, stop := startDaemon()
	defer stop()

	c, err := client.Dial(path) // "" dials the default socket
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1024, Name: "counters"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	if err := m.Update(key(42), value(7), client.UpdateAny); err != nil {
		log.Fatal(err)
	}
	v := make([]byte, 8)
	if err := m.Lookup(key(42), v); err != nil {
		log.Fatal(err)
	}
	fmt.Println("42 ->", binary.LittleEndian.Uint64(v))

	err = m.Update(key(42), value(8), client.UpdateNoExist)
	fmt.Println("NOEXIST on a present key:", errors.Is(err, client.ErrKeyExist), errors.Is(err, syscall.EEXIST))

	err = m.Lookup(key(1), v)
	fmt.Println("missing key:", errors.Is(err, client.ErrKeyNotExist))
	// Output:
	// 42 -> 7
	// NOEXIST on a present key: true true
	// missing key: true
}

// Share a map read-only: Reopen makes a weaker descriptor, which can be
// sent to another process with SendDescriptors and presented there with
// ImportMap. Here both ends are in one process.
func ExampleMap_Reopen() {
	path, stop := startDaemon()
	defer stop()
	c, err := client.Dial(path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	m.Update(key(1), value(100), client.UpdateAny)

	ro, err := m.Reopen(client.ModeRead)
	if err != nil {
		log.Fatal(err)
	}
	defer ro.Close()

	// Send the read-only descriptor over a Unix socket...
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatal(err)
	}
	a, b := unixConn(fds[0]), unixConn(fds[1])
	defer a.Close()
	defer b.Close()
	if err := client.SendDescriptors(a, ro.FD()); err != nil {
		log.Fatal(err)
	}
	// ...and receive and import it on the other side (normally another
	// process, with its own Conn).
	got, err := client.ReceiveDescriptors(b, 1)
	if err != nil {
		log.Fatal(err)
	}
	shared, err := c.ImportMap(got[0])
	syscall.Close(got[0]) // ImportMap made its own copy
	if err != nil {
		log.Fatal(err)
	}
	defer shared.Close()

	v := make([]byte, 8)
	shared.Lookup(key(1), v)
	fmt.Println("lookup:", binary.LittleEndian.Uint64(v))
	err = shared.Update(key(1), value(0), client.UpdateAny)
	fmt.Println("update refused:", errors.Is(err, client.ErrPermission))
	_, err = shared.Reopen(client.ModeReadWrite)
	fmt.Println("upgrade refused:", errors.Is(err, client.ErrPermission))
	info, _ := shared.Info()
	fmt.Println("mode:", info.Mode)
	// Output:
	// lookup: 100
	// update refused: true
	// upgrade refused: true
	// mode: r
}

func unixConn(fd int) *net.UnixConn {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		log.Fatal(err)
	}
	return c.(*net.UnixConn)
}

// Walk every element with an iterator (batch lookups underneath).
func ExampleMap_Iterate() {
	path, stop := startDaemon()
	defer stop()
	c, err := client.Dial(path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	for i := range uint32(3) {
		m.Update(key(i), value(uint64(i)*10), client.UpdateAny)
	}

	it := m.Iterate()
	k, v := make([]byte, 4), make([]byte, 8)
	for it.Next(k, v) {
		fmt.Println(binary.LittleEndian.Uint32(k), binary.LittleEndian.Uint64(v))
	}
	if err := it.Err(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 0 0
	// 1 10
	// 2 20
}

// Update many elements in one round trip, then read them back in chunks.
func ExampleMap_BatchLookup() {
	path, stop := startDaemon()
	defer stop()
	c, err := client.Dial(path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 5})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	var keys, values []byte
	for i := range uint32(5) {
		keys = append(keys, key(i)...)
		values = append(values, value(uint64(i)+1)...)
	}
	n, err := m.BatchUpdate(keys, values, nil)
	fmt.Println("updated", n, err)

	var cursor client.MapBatchCursor
	kOut, vOut := make([]byte, 2*4), make([]byte, 2*8)
	for {
		n, err := m.BatchLookup(&cursor, kOut, vOut, nil)
		var elems []string
		for i := range n {
			elems = append(elems, fmt.Sprintf("%d=%d", binary.LittleEndian.Uint32(kOut[4*i:]), binary.LittleEndian.Uint64(vOut[8*i:])))
		}
		fmt.Println(strings.Join(elems, " "))
		if errors.Is(err, client.ErrKeyNotExist) {
			break // the end, possibly with a partial last batch
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// updated 5 <nil>
	// 0=1 1=2
	// 2=3 3=4
	// 4=5
}

// The owner of a map sees what it lent and takes a branch back, without
// the Map that Reopen returned (closed here; after a daemon restart it
// would be gone too): Lineage and RevokeNode need the destroy right,
// which only the creating descriptor has.
func ExampleMap_RevokeNode() {
	path, stop := startDaemon()
	defer stop()
	c, err := client.Dial(path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println("owner's mode:", m.Mode())

	lent, err := m.Reopen(client.ModeRead) // to send to someone
	if err != nil {
		log.Fatal(err)
	}
	info, _ := lent.Info()
	held, err := c.ImportMap(lent.FD()) // what the receiver would hold
	if err != nil {
		log.Fatal(err)
	}
	defer held.Close()
	lent.Close()
	fmt.Println("lent mode:", held.Mode(), "destroy:", errors.Is(held.Destroy(), client.ErrPermission))

	nodes, _ := m.Lineage()
	for _, n := range nodes {
		fmt.Println("node", n.ID, "parent", n.Parent, n.Mode, "handles", n.Handles)
	}
	n, err := m.RevokeNode(info.Node)
	fmt.Println("revoked", n, err)
	fmt.Println("holder:", errors.Is(held.Lookup(key(0), make([]byte, 8)), client.ErrBadDescriptor))
	// Output:
	// owner's mode: rwd
	// lent mode: r destroy: true
	// node 1 parent 0 rwd handles 1
	// node 2 parent 1 r handles 1
	// revoked 1 <nil>
	// holder: true
}

// Keys and values as Go types, with cilium/ebpf's rules: fixed-size
// structs, one value per CPU for per-CPU maps.
func ExampleMap_Lookup_typed() {
	path, stop := startDaemon()
	defer stop()
	c, err := client.Dial(path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	type stats struct{ Packets, Bytes uint64 }
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 8})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Update(uint32(8), stats{Packets: 1000, Bytes: 64000}, client.UpdateAny); err != nil {
		log.Fatal(err)
	}
	var s stats
	if err := m.Lookup(uint32(8), &s); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n", s)

	pc, err := c.NewMap(client.MapSpec{Type: client.PercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	if err := pc.Update(uint32(0), []uint64{5}, client.UpdateAny); err != nil { // CPU 0; the others 0
		log.Fatal(err)
	}
	var perCPU []uint64
	if err := pc.Lookup(uint32(0), &perCPU); err != nil {
		log.Fatal(err)
	}
	fmt.Println(perCPU[0], len(perCPU) == client.PossibleCPUs())
	// Output:
	// {Packets:1000 Bytes:64000}
	// 5 true
}
