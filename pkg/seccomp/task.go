package seccomp

import (
	"errors"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// ErrTaskGone is returned by Task reads when the notifying task cannot be
// read (it exited, or is not visible in this pid namespace or /proc).
var ErrTaskGone = errno.New(unix.ESRCH, "seccomp: notifying task is gone")

// errStatusFormat is returned when /proc/PID/status lacks a field.
var errStatusFormat = errno.New(unix.EIO, "seccomp: unexpected /proc/PID/status format")

// TaskCommLen is TASK_COMM_LEN: the size of a task's comm, NUL included.
const TaskCommLen = 16

// Task describes the task behind one notification: its ids are read lazily
// from /proc/PID/status and /proc/PID/comm the first time a method asks, then
// cached for this notification. After every /proc read, the notification is
// checked with IDValid, so a value returned without error belongs to the
// notifying task, not to a later process that reused its pid.
//
// A Task is only valid during the decide call it was passed to and must not
// be used concurrently. Reads do not allocate.
type Task struct {
	l   *Listener
	id  uint64
	pid uint32

	haveStatus, haveComm bool
	tgid                 uint32
	uid, euid, gid, egid uint32
	comm                 [TaskCommLen]byte

	buf [1024]byte
}

func (t *Task) reset(l *Listener, n *Notif) {
	t.l, t.id, t.pid = l, n.ID, n.PID
	t.haveStatus, t.haveComm = false, false
}

// PID returns the thread id of the notifying task in the supervisor's pid
// namespace (0 if it is not visible there).
func (t *Task) PID() uint32 { return t.pid }

// TGID returns the thread-group id (process id) of the task. Errors:
// ErrTaskGone, ErrNotifGone (read, but the task is no longer the one that
// notified), or the read error.
func (t *Task) TGID() (uint32, error) {
	if err := t.loadStatus(); err != nil {
		return 0, err
	}
	return t.tgid, nil
}

// UID returns the task's real and effective user ids (Uid: in
// /proc/PID/status). Errors as for TGID.
func (t *Task) UID() (real, effective uint32, err error) {
	if err := t.loadStatus(); err != nil {
		return 0, 0, err
	}
	return t.uid, t.euid, nil
}

// GID returns the task's real and effective group ids. Errors as for TGID.
func (t *Task) GID() (real, effective uint32, err error) {
	if err := t.loadStatus(); err != nil {
		return 0, 0, err
	}
	return t.gid, t.egid, nil
}

// Comm returns the task's comm (/proc/PID/comm) NUL-padded to TASK_COMM_LEN,
// as bpf_get_current_comm fills it. Errors as for TGID.
func (t *Task) Comm() ([TaskCommLen]byte, error) {
	if !t.haveComm {
		n, err := t.readProc("/comm")
		if err != nil {
			return [TaskCommLen]byte{}, err
		}
		if n > 0 && t.buf[n-1] == '\n' {
			n--
		}
		t.comm = [TaskCommLen]byte{}
		copy(t.comm[:TaskCommLen-1], t.buf[:n])
		t.haveComm = true
	}
	return t.comm, nil
}

func (t *Task) loadStatus() error {
	if t.haveStatus {
		return nil
	}
	n, err := t.readProc("/status")
	if err != nil {
		return err
	}
	s := t.buf[:n]
	var got int
	for len(s) > 0 && got != 7 {
		line := s
		if i := indexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			s = nil
		}
		switch {
		case hasPrefix(line, "Tgid:"):
			f, ok := fields(line[5:], 1)
			if !ok {
				return errStatusFormat
			}
			t.tgid = f[0]
			got |= 1
		case hasPrefix(line, "Uid:"):
			f, ok := fields(line[4:], 2)
			if !ok {
				return errStatusFormat
			}
			t.uid, t.euid = f[0], f[1]
			got |= 2
		case hasPrefix(line, "Gid:"):
			f, ok := fields(line[4:], 2)
			if !ok {
				return errStatusFormat
			}
			t.gid, t.egid = f[0], f[1]
			got |= 4
		}
	}
	if got != 7 {
		return errStatusFormat
	}
	t.haveStatus = true
	return nil
}

// readProc reads up to len(t.buf) bytes of /proc/PID<suffix> into t.buf, then
// checks that the notification is still valid.
func (t *Task) readProc(suffix string) (int, error) {
	if t.pid == 0 {
		return 0, ErrTaskGone
	}
	var path [48]byte
	p := append(path[:0], "/proc/"...)
	p = strconv.AppendUint(p, uint64(t.pid), 10)
	p = append(p, suffix...)
	p = append(p, 0)
	dirfd := unix.AT_FDCWD
	fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&p[0])),
		unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		if e == unix.ENOENT || e == unix.ESRCH {
			return 0, ErrTaskGone
		}
		return 0, os.NewSyscallError("openat", e)
	}
	n, err := readFull(int(fd), t.buf[:])
	unix.Close(int(fd))
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return 0, ErrTaskGone
		}
		return 0, err
	}
	if err := t.l.IDValid(t.id); err != nil {
		return 0, err
	}
	return n, nil
}

func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, os.NewSyscallError("read", err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func hasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

// fields parses the first want whitespace-separated decimal uint32s of b.
func fields(b []byte, want int) (out [2]uint32, ok bool) {
	got := 0
	for i := 0; i < len(b) && got < want; {
		if b[i] == ' ' || b[i] == '\t' {
			i++
			continue
		}
		var v uint64
		j := i
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			v = v*10 + uint64(b[j]-'0')
			if v > 1<<32-1 {
				return out, false
			}
		}
		if j == i {
			return out, false
		}
		out[got] = uint32(v)
		got++
		i = j
	}
	return out, got == want
}
