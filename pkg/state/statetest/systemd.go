// Package statetest provides a fake service manager for tests of the
// systemd paths of bpfd: a NOTIFY_SOCKET that keeps the fds a service
// stores (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1), drops those that hang up,
// records the other state messages, and hands the stored fds back to the
// next process as systemd does (LISTEN_FDS, LISTEN_FDNAMES, fds from 3
// on). It is a package of its own so that the daemon's and the state
// package's tests share it.
package statetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Systemd is a fake service manager's notification socket and fd
// store. Safe for concurrent use.
type Systemd struct {
	// Socket is the NOTIFY_SOCKET path.
	Socket string
	// Max is FileDescriptorStoreMax: fds beyond it are refused (closed),
	// as systemd does.
	Max int

	fd   int
	done chan struct{}

	mu     sync.Mutex
	store  []Stored // guarded by mu
	states []string // guarded by mu: every message without fds, in order
	cond   *sync.Cond
}

// Stored is one fd in the fake store.
type Stored struct {
	Name string
	FD   int
}

// NewSystemd starts a fake service manager in a temporary directory of
// t, with FileDescriptorStoreMax max. Its goroutine and every stored fd
// end with the test.
func NewSystemd(t testing.TB, max int) *Systemd {
	t.Helper()
	dir, err := os.MkdirTemp("", "fake-systemd-")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666)
	// Room for many queued notifications.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	s := &Systemd{Socket: path, Max: max, fd: fd, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	go s.loop()
	t.Cleanup(func() {
		unix.Shutdown(fd, unix.SHUT_RDWR)
		unix.Close(fd)
		<-s.done
		s.mu.Lock()
		for _, st := range s.store {
			unix.Close(st.FD)
		}
		s.store = nil
		s.mu.Unlock()
		os.RemoveAll(dir)
	})
	return s
}

func (s *Systemd) loop() {
	defer close(s.done)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(253*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 && oobn == 0 {
			return
		}
		var fds []int
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if r, err := unix.ParseUnixRights(&cm); err == nil {
					fds = append(fds, r...)
				}
			}
		}
		s.handle(string(buf[:n]), fds)
	}
}

func (s *Systemd) handle(msg string, fds []int) {
	kv := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.cond.Broadcast()
	switch {
	case kv["FDSTORE"] == "1":
		name := kv["FDNAME"]
		if name == "" {
			name = "stored"
		}
		for _, fd := range fds {
			s.dropHungUpLocked()
			if len(s.store) >= s.Max {
				unix.Close(fd)
				continue
			}
			s.store = append(s.store, Stored{Name: name, FD: fd})
		}
	case kv["FDSTOREREMOVE"] == "1":
		keep := s.store[:0]
		for _, st := range s.store {
			if st.Name == kv["FDNAME"] {
				unix.Close(st.FD)
				continue
			}
			keep = append(keep, st)
		}
		s.store = keep
		for _, fd := range fds {
			unix.Close(fd)
		}
	default:
		for _, fd := range fds {
			unix.Close(fd)
		}
		s.states = append(s.states, msg)
	}
}

// dropHungUpLocked closes stored fds that report POLLHUP or POLLERR, as
// systemd does (FDPOLL=1, the default). s.mu is held.
func (s *Systemd) dropHungUpLocked() {
	if len(s.store) == 0 {
		return
	}
	pfds := make([]unix.PollFd, len(s.store))
	for i, st := range s.store {
		pfds[i] = unix.PollFd{Fd: int32(st.FD)}
	}
	if _, err := unix.Poll(pfds, 0); err != nil {
		return
	}
	keep := s.store[:0]
	for i, st := range s.store {
		if pfds[i].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			unix.Close(st.FD)
			continue
		}
		keep = append(keep, st)
	}
	s.store = keep
}

// Env returns the environment a service under this manager gets:
// NOTIFY_SOCKET.
func (s *Systemd) Env() []string { return []string{"NOTIFY_SOCKET=" + s.Socket} }

// Store returns what the store holds now (after dropping hung-up fds).
func (s *Systemd) Store() []Stored {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropHungUpLocked()
	return append([]Stored(nil), s.store...)
}

// States returns every state message received so far (READY=1, ...).
func (s *Systemd) States() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.states...)
}

// WaitState waits until a state message containing want has arrived
// after the first skip messages, or the process p exits (then it returns
// false).
func (s *Systemd) WaitState(want string, skip int, exited <-chan struct{}) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for _, m := range s.states[min(skip, len(s.states)):] {
			if strings.Contains(m, want) {
				return true
			}
		}
		select {
		case <-exited:
			return false
		default:
		}
		waitWithWake(s.cond, exited)
	}
}

// waitWithWake waits on c (whose lock is held) until it is signalled or
// done closes.
func waitWithWake(c *sync.Cond, done <-chan struct{}) {
	stop := make(chan struct{})
	go func() {
		select {
		case <-done:
			c.L.Lock()
			c.Broadcast()
			c.L.Unlock()
		case <-stop:
		}
	}()
	c.Wait()
	close(stop)
}

// Prepare sets up cmd as systemd starts a service: NOTIFY_SOCKET, and the
// stored fds as fds 3, 4, ... (cmd.ExtraFiles) with LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID. listen are sockets (socket activation)
// passed first, with their names. systemd sets LISTEN_PID to the child's
// pid, which is unknown before it starts: the fake sets
// LISTEN_PID_FROM_PARENT=1 instead, and the child (see ChildListenPID)
// must accept that. It returns the files given to cmd, which the caller
// closes after Start.
func (s *Systemd) Prepare(cmd *exec.Cmd, listen map[string]*os.File) []*os.File {
	var names []string
	var files []*os.File
	for name, f := range listen {
		names = append(names, name)
		files = append(files, f)
	}
	for _, st := range s.Store() {
		dup, err := unix.FcntlInt(uintptr(st.FD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			continue
		}
		names = append(names, st.Name)
		files = append(files, os.NewFile(uintptr(dup), st.Name))
	}
	cmd.ExtraFiles = files
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(env, s.Env()...)
	if len(files) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"),
			"LISTEN_PID_FROM_PARENT=1")
	}
	cmd.Env = env
	return files
}

// ChildListenPID is what a test's child process calls first thing: with
// LISTEN_PID_FROM_PARENT=1 in its environment (Prepare), it sets
// LISTEN_PID to its own pid, as systemd would have.
func ChildListenPID() {
	if os.Getenv("LISTEN_PID_FROM_PARENT") == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		os.Unsetenv("LISTEN_PID_FROM_PARENT")
	}
}

// String describes the store, for failure messages.
func (s *Systemd) String() string {
	var b bytes.Buffer
	for _, st := range s.Store() {
		fmt.Fprintf(&b, "%s=%d ", st.Name, st.FD)
	}
	return b.String()
}
