package bpfemu

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/bpfemu/internal/emutest"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
)

// fuzzTask is a child process standing for a traced task: the supervisor
// reads and writes its memory, so whatever a fuzzed attr points at, the
// test process's own memory is never touched.
type fuzzTask struct {
	pid  int
	base uint64 // a 64 KiB read-write region in the task
	cmd  *exec.Cmd
}

func startFuzzTask(t testing.TB) *fuzzTask {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), emutest.RoleEnv+"=task")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	base, perr := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
	if err != nil || perr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("task: %q %v %v", line, err, perr)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	return &fuzzTask{pid: cmd.Process.Pid, base: base, cmd: cmd}
}

// put writes b into the task's region at off.
func (ft *fuzzTask) put(t testing.TB, off uint64, b []byte) {
	if len(b) == 0 {
		return
	}
	local := unix.Iovec{Base: &b[0]}
	local.SetLen(len(b))
	remote := unix.RemoteIovec{Base: uintptr(ft.base + off), Len: len(b)}
	if n, err := processVM(unix.SYS_PROCESS_VM_WRITEV, ft.pid, &local, &remote); err != nil || n != len(b) {
		t.Fatalf("write task memory: %d %v", n, err)
	}
}

// taskCall makes the supervisor answer syscall nr as made by the task.
func (h *harness) taskCall(pid int, nr int32, args ...uint64) (int64, error) {
	c := h.s.callPool.Get().(*call)
	defer h.s.callPool.Put(c)
	c.notif = seccomp.Notif{ID: 1, PID: uint32(pid), Data: seccomp.Data{NR: nr, Arch: unix.AUDIT_ARCH_X86_64}}
	copy(c.notif.Data.Args[:], args)
	c.start()
	if nr == unix.SYS_BPF {
		return c.bpf()
	}
	return c.fs()
}

// closeInstalled closes the fds the stand-in answerer "installed".
func (h *harness) closeInstalled() {
	h.ans.mu.Lock()
	fds := h.ans.fds
	h.ans.fds = nil
	h.ans.mu.Unlock()
	closeAll(fds)
}

// FuzzBPF feeds the supervisor bpf(2) calls with arbitrary commands,
// sizes and attr bytes (whose pointers point anywhere: into the task's
// region, at its edges, at nothing) and checks that every call is answered
// with an errno or a value, never a crash, and that nothing leaks.
func FuzzBPF(f *testing.F) {
	if testing.Short() {
		f.Skip("starts a daemon and a task process")
	}
	emutest.RequireNotify(f)
	h := newHarness(f)
	ft := startFuzzTask(f)
	// Seeds: each command with a zero attr, and a few valid-looking ones
	// (more in testdata/fuzz/FuzzBPF).
	for cmd := uint8(0); cmd < 40; cmd++ {
		f.Add(cmd, uint16(attrSize), make([]byte, attrSize))
	}
	mc := make([]byte, attrSize)
	put32(mc, mcMapType, mapHash)
	put32(mc, mcKeySize, 4)
	put32(mc, mcValueSize, 8)
	put32(mc, mcMaxEntries, 4)
	f.Add(uint8(cmdMapCreate), uint16(128), mc)
	f.Fuzz(func(t *testing.T, cmd uint8, size uint16, attr []byte) {
		if len(attr) > 1<<15 {
			attr = attr[:1<<15]
		}
		// Small numbers in pointer words become addresses in the task's
		// region, so that fuzzed attrs reach real memory too.
		fixed := bytes.Clone(attr)
		for off := 0; off+8 <= len(fixed); off += 8 {
			if v := get64(fixed, off); v != 0 && v < 1<<16 {
				put64(fixed, off, ft.base+v)
			}
		}
		ft.put(t, 0, fixed)
		h.taskCall(ft.pid, unix.SYS_BPF, uint64(cmd), ft.base, uint64(size))
		h.closeInstalled()
		h.s.collect()
		h.s.conn.mu.Lock()
		broken := h.s.conn.broken
		h.s.conn.mu.Unlock()
		if broken != nil {
			t.Fatalf("cmd %d size %d: the connection to bpfd broke: %v", cmd, size, broken)
		}
	})
}

func get64(b []byte, off int) uint64 {
	return uint64(get32(b, off)) | uint64(get32(b, off+4))<<32
}

// FuzzLog checks the kernel's log truncation rules on arbitrary logs and
// buffer sizes: what lands in the buffer is NUL-terminated within it, is
// the log's head (BPF_LOG_FIXED) or tail, and ENOSPC says it was cut.
func FuzzLog(f *testing.F) {
	f.Add(uint32(1), uint32(16), []byte("0: (95) exit\nR0 !read_ok\n"))
	f.Add(uint32(1|bpfLogFixed), uint32(4), []byte("abcdef"))
	f.Add(uint32(2), uint32(128), []byte(""))
	f.Fuzz(func(t *testing.T, level, size uint32, text []byte) {
		size %= 1 << 16
		if size == 0 {
			size = 1
		}
		out, trueSize, cut := cutLog(level, size, text)
		if trueSize != uint32(len(text)+1) {
			t.Fatalf("true size %d for %d bytes", trueSize, len(text))
		}
		if len(out) > int(size) || len(out) == 0 || out[len(out)-1] != 0 {
			t.Fatalf("buffer of %d bytes holds %q", size, out)
		}
		body := out[:len(out)-1]
		if cut != (len(text)+1 > int(size)) {
			t.Fatalf("cut %v for %d bytes into %d", cut, len(text), size)
		}
		if level&bpfLogFixed != 0 {
			if !bytes.HasPrefix(text, body) {
				t.Fatalf("fixed log %q is not the head of %q", body, text)
			}
		} else if !bytes.HasSuffix(text, body) {
			t.Fatalf("rotating log %q is not the tail of %q", body, text)
		}
	})
}

// FuzzPaths runs the path recognisers on arbitrary strings: no panics,
// and a path recognised as under the prefix maps to a path inside the
// pin root.
func FuzzPaths(f *testing.F) {
	for _, p := range []string{"/sys/fs/bpf", "/sys/fs/bpf/a/b", "/sys/fs/bpfx", "/proc/self/fd/3",
		"/proc/123/task/123/fdinfo/4", "/proc/self/mounts", "/proc/thread-self/mountinfo", "socket:[42]",
		"/run/pins/x", "/", "/proc/self/fd/-1", "/proc/self/fd/99999999999"} {
		f.Add(p)
	}
	s := &Supervisor{bpffs: DefaultBPFFS, pinRoot: "/run/pins"}
	f.Fuzz(func(t *testing.T, p string) {
		procFD(p)
		procMounts(p)
		socketInode([]byte(p))
		if !strings.HasPrefix(p, "/") {
			return
		}
		abs := filepath.Clean(p)
		rel, ok := s.inFS(abs)
		if !ok {
			return
		}
		host := s.hostPath(rel)
		if host != s.pinRoot && !strings.HasPrefix(host, s.pinRoot+"/") {
			t.Fatalf("%q maps to %q, outside the pin root", p, host)
		}
		if strings.Contains("/"+rel+"/", "/../") {
			t.Fatalf("%q maps to %q, which climbs", p, rel)
		}
	})
}
