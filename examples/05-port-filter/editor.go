package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/examples/internal/demo"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// editor is the untrusted side: it receives a write-only descriptor of the
// port map over its control socket (fd 3), then serves "add PORT" and
// "del PORT" requests until the trusted side closes the socket.
func editor() error {
	f := os.NewFile(controlFD, "control")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return err
	}
	control := fc.(*net.UnixConn)
	defer control.Close()

	fds, err := client.ReceiveDescriptors(control, 1)
	if err != nil {
		return err
	}
	c, err := client.Dial("")
	if err != nil {
		unix.Close(fds[0])
		return err
	}
	defer c.Close()
	ports, err := c.ImportMap(fds[0])
	unix.Close(fds[0]) // ImportMap made its own copy
	if err != nil {
		return err
	}
	defer ports.Close()

	buf := make([]byte, 256)
	for {
		n, err := control.Read(buf)
		if errors.Is(err, io.EOF) || err == nil && n == 0 {
			return nil // the trusted side is done
		}
		if err != nil {
			return err
		}
		reply := "ok"
		if err := serve(c, ports, string(buf[:n])); err != nil {
			reply = err.Error()
		}
		if _, err := control.Write([]byte(reply)); err != nil {
			return err
		}
	}
}

// serve carries out one request.
func serve(c *client.Conn, ports *client.Map, req string) error {
	if req == "hello" {
		limits(c, ports)
		return nil
	}
	op, arg, _ := strings.Cut(req, " ")
	port, err := strconv.ParseUint(arg, 10, 16)
	if err != nil {
		return fmt.Errorf("bad port %q", arg)
	}
	key := binary.NativeEndian.AppendUint16(nil, uint16(port))
	switch op {
	case "add":
		return ports.Update(key, []byte{1}, client.UpdateAny)
	case "del":
		return ports.Delete(key)
	}
	return fmt.Errorf("unknown request %q", req)
}

// limits prints what the editor's descriptor lets it do, and what it does
// not.
func limits(c *client.Conn, ports *client.Map) {
	me := demo.Uid()
	fmt.Printf("  %s holds one descriptor: a %v map, mode %v\n", me, ports.Type(), ports.Mode())

	key := binary.NativeEndian.AppendUint16(nil, 443)
	fmt.Printf("  %s lookup(443) = %s\n", me, demo.Result(ports.Lookup(key, make([]byte, 1))))
	fmt.Printf("  %s next key = %s\n", me, demo.Result(ports.NextKey(nil, make([]byte, 2))))
	it := ports.Iterate()
	for it.Next(make([]byte, 2), make([]byte, 1)) {
	}
	fmt.Printf("  %s dump = %s\n", me, demo.Result(it.Err()))

	// Its descriptor is not a program's: it has nothing to run, inspect
	// or replace the filter with.
	_, err := c.ImportProgram(ports.FD())
	fmt.Printf("  %s use its descriptor as a program = %s\n", me, demo.Result(err))

	// Nor can it read the map through a program of its own: the program
	// gets the map with the descriptor's mode, write-only.
	reader := asm.Instructions{
		asm.StoreImm(asm.R10, -2, 443, asm.Half),
		asm.LoadMapPtr(asm.R1, ports.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -2),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 2), // XDP_PASS
		asm.Return(),
	}
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.XDP, Instructions: reader, License: "GPL", Name: "peek"})
	var verr *client.VerifierError
	switch {
	case err == nil:
		p.Close()
		fmt.Printf("  %s load a program that looks up \"ports\" = ok (unexpected)\n", me)
	case errors.As(err, &verr):
		log := strings.Split(strings.TrimSpace(verr.Log), "\n")
		fmt.Printf("  %s load a program that looks up \"ports\" = %s\n", me, unix.ErrnoName(verr.Errno))
		fmt.Printf("  %s   verifier: %s\n", me, log[len(log)-1])
	default:
		fmt.Printf("  %s load a program that looks up \"ports\" = %s\n", me, demo.Result(err))
	}
}
