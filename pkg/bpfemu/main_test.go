package bpfemu_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/bpfctl"
	"github.com/bpfd-project/bpfd/pkg/bpfemu/internal/emutest"
	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
)

// roleEnv makes the test binary play a part in a test: "bpfctl" runs
// bpfctl with the arguments (the tests run it as another user); "bpffs"
// mounts a bpf file system on /sys/fs/bpf (in the private mount namespace
// the test started it in) and executes the arguments, so that the kernel
// runs of the test programs pin where the emulated runs do; "task" is a
// process whose memory the fuzz targets use as a traced task's.
const roleEnv = emutest.RoleEnv

func TestMain(m *testing.M) {
	// bpfctl exec --bpf re-executes its binary as the seccomp shim.
	seccomp.ShimMain()
	switch os.Getenv(roleEnv) {
	case "bpfctl":
		os.Unsetenv(roleEnv)
		os.Exit(bpfctl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	case "task":
		// A process whose memory the fuzz tests hand to the supervisor
		// as a traced task's: a read-write region at a known address,
		// then nothing until stdin closes.
		mem, err := unix.Mmap(-1, 0, 1<<16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			os.Exit(125)
		}
		fmt.Printf("%d\n", uintptr(unsafe.Pointer(&mem[0])))
		os.Stdin.Read(make([]byte, 1))
		os.Exit(0)
	case "daemon":
		// bpfd in a process of its own, as whatever user the test
		// started it as: socket and pin root from the arguments, "ready"
		// once it listens; when stdin closes it waits for its holdings
		// to go and prints what is left.
		os.Exit(daemonRole(os.Args[1], os.Args[2]))
	case "native-bench":
		// A pkg/client program in a process of its own, as the native
		// baseline of BenchmarkEmulatedMapOps: "lookup NS update NS".
		os.Exit(nativeBench(os.Args[1], os.Args[2]))
	case "bpffs":
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"); err != nil {
			fmt.Fprintln(os.Stderr, "mount bpffs:", err)
			os.Exit(125)
		}
		os.Unsetenv(roleEnv)
		err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
		fmt.Fprintln(os.Stderr, "exec:", err)
		os.Exit(126)
	}
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	if r, w, err := os.Pipe(); err == nil { // the netpoller's fds belong to the baseline
		r.Close()
		w.Close()
	}
	before := listFDs()
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for len(listFDs()) > len(before) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := listFDs(); len(after) > len(before) {
			fmt.Fprintf(os.Stderr, "FAIL: leaked fds: %d open before the tests, %d after\nbefore: %v\nafter:  %v\n",
				len(before), len(after), before, after)
			code = 1
		}
	}
	os.Exit(code)
}

// daemonRole is the "daemon" role of TestMain.
func daemonRole(socket, pinRoot string) int {
	srv, err := demux.NewServer(&demux.Config{Logger: zap.NewNop(), PinRoot: pinRoot, Version: "test"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return 1
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return 1
	}
	if err := os.Chmod(socket, 0o666); err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return 1
	}
	go srv.Serve(ln)
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	deadline := time.Now().Add(10 * time.Second)
	st := srv.Stats()
	for (st.Objects != 0 || st.Descriptors != 0 || st.Connections != 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		st = srv.Stats()
	}
	fmt.Printf("objects %d descriptors %d connections %d\n", st.Objects, st.Descriptors, st.Connections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return 0
}

func listFDs() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}
