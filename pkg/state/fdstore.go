package state

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FDStore keeps file descriptors in systemd's file descriptor store
// (sd_notify(3): FDSTORE=1 with FDNAME=, FDSTOREREMOVE=1), so that they
// outlive a crash of the daemon: systemd hands them back to the restarted
// service with LISTEN_FDS / LISTEN_FDNAMES (ListenFDs). The unit must set
// FileDescriptorStoreMax= (otherwise systemd ignores the messages).
//
// systemd also drops a stored fd by itself when it reports POLLHUP or
// POLLERR (a descriptor whose every client copy was closed), and empties
// the store when the service is stopped (not when it crashes or
// reloads).
//
// A nil *FDStore does nothing. Safe for concurrent use.
type FDStore struct {
	sa  unix.Sockaddr
	max int

	mu     sync.Mutex
	fd     int             // guarded by mu: the datagram socket messages leave by
	stored map[string]bool // guarded by mu
}

// FD name prefixes (FDName).
const (
	PrefixDescriptor = "d" // the daemon's end of a descriptor, by its client end's cookie
	PrefixSeccomp    = "s" // a seccomp listener, by attachment id
	PrefixQueue      = "q" // a netfilter queue socket, by link id and queue index
)

// FDName returns the name of an fd in the store: prefix, then the ids in
// base 36 separated by dots. Names are short on purpose: systemd passes
// them all in one environment variable (LISTEN_FDNAMES), and the kernel
// limits one variable to 128 KiB.
func FDName(prefix string, ids ...uint64) string {
	b := make([]byte, 0, 16)
	b = append(b, prefix...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendUint(b, id, 36)
	}
	return string(b)
}

// ParseFDName splits a name made by FDName with one of the Prefix*
// constants into its prefix and ids; ok is false for anything else
// (such as the names systemd gives sockets, "bpfd.socket").
func ParseFDName(name string) (prefix string, ids []uint64, ok bool) {
	if len(name) < 2 {
		return "", nil, false
	}
	switch name[:1] {
	case PrefixDescriptor, PrefixSeccomp, PrefixQueue:
	default:
		return "", nil, false
	}
	for _, f := range strings.Split(name[1:], ".") {
		v, err := strconv.ParseUint(f, 36, 64)
		if err != nil || f == "" || strconv.FormatUint(v, 36) != f {
			return "", nil, false
		}
		ids = append(ids, v)
	}
	return name[:1], ids, true
}

// ErrStoreFull: the store holds as many fds as it may (the unit's
// FileDescriptorStoreMax=, as told to NewFDStore).
var ErrStoreFull = errors.New("state: systemd's fd store is full (FileDescriptorStoreMax)")

// NewFDStore returns a store that talks to the service manager at
// notifySocket (NOTIFY_SOCKET: a path, or an abstract address starting
// with '@') and keeps at most max fds (the unit's
// FileDescriptorStoreMax=; systemd ignores fds beyond it). It returns
// nil, nil when notifySocket is empty or max < 1.
func NewFDStore(notifySocket string, max int) (*FDStore, error) {
	if notifySocket == "" || max < 1 {
		return nil, nil
	}
	var sa *unix.SockaddrUnix
	switch notifySocket[0] {
	case '/':
		sa = &unix.SockaddrUnix{Name: notifySocket}
	case '@':
		sa = &unix.SockaddrUnix{Name: "\x00" + notifySocket[1:]}
	default:
		return nil, fmt.Errorf("state: NOTIFY_SOCKET %q is not a Unix socket address", notifySocket)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// Never hang the daemon on a wedged service manager.
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	return &FDStore{sa: sa, max: max, fd: fd, stored: map[string]bool{}}, nil
}

// Adopt records that name is in the store already (handed back at start
// by ListenFDs and kept), so that the count of stored fds is right.
func (s *FDStore) Adopt(name string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.stored[name] = true
	s.mu.Unlock()
}

// Store sends fd to the store under name (which must be unique among
// what is stored: FDName). The caller keeps fd. It returns ErrStoreFull
// when max fds are stored, or the sendmsg error.
func (s *FDStore) Store(name string, fd int) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stored[name] {
		return nil
	}
	if len(s.stored) >= s.max {
		return ErrStoreFull
	}
	msg := "FDSTORE=1\nFDNAME=" + name
	if err := s.send(msg, unix.UnixRights(fd)); err != nil {
		return err
	}
	s.stored[name] = true
	return nil
}

// Remove asks the service manager to close its copy of the fd named
// name. Removing a name that is not stored does nothing.
func (s *FDStore) Remove(name string) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stored[name] {
		return nil
	}
	delete(s.stored, name)
	return s.send("FDSTOREREMOVE=1\nFDNAME="+name, nil)
}

// Names returns the names of the fds stored (sorted).
func (s *FDStore) Names() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.stored))
	for n := range s.stored {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Stored returns how many fds the store holds for the daemon (as far
// as it knows: systemd may have dropped hung-up ones).
func (s *FDStore) Stored() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.stored)
}

// Notify sends another sd_notify state message (READY=1, RELOADING=1)
// over the same socket.
func (s *FDStore) Notify(state string) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.send(state, nil)
}

func (s *FDStore) send(msg string, oob []byte) error {
	for {
		err := unix.Sendmsg(s.fd, []byte(msg), oob, s.sa, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmsg(NOTIFY_SOCKET)", err)
		}
		return nil
	}
}

// Close closes the store's socket (the stored fds stay with systemd).
func (s *FDStore) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

// ListenFDs returns the fds passed by the service manager (sd_listen_fds:
// LISTEN_PID equal to pid, LISTEN_FDS fds from 3 on, their names in
// LISTEN_FDNAMES, "unknown" when unnamed), by name, each made
// close-on-exec; nil, nil when none are passed to this process. The
// caller owns them. It fails for an implausible count.
func ListenFDs(getenv func(string) string, pid int) (map[string][]int, error) {
	return listenFDs(getenv, pid, listenFDsStart)
}

func listenFDs(getenv func(string) string, pid, start int) (map[string][]int, error) {
	lp := getenv("LISTEN_PID")
	if lp == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(lp); err != nil || p != pid {
		return nil, nil
	}
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	if n > 1<<20 {
		return nil, fmt.Errorf("state: LISTEN_FDS=%d is implausible", n)
	}
	var names []string
	if s := getenv("LISTEN_FDNAMES"); s != "" {
		names = strings.Split(s, ":")
	}
	out := map[string][]int{}
	for i := range n {
		fd := start + i
		unix.CloseOnExec(fd)
		name := "unknown"
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		out[name] = append(out[name], fd)
	}
	return out, nil
}
