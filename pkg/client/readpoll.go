package client

import (
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// readPoll is how the shared-memory readers (RingbufReader, PerfReader)
// block: an epoll set of the wakeup eventfds the daemon signals, a stop
// eventfd Close signals, and a deadline. The epoll descriptor is itself
// pollable (readable when a wakeup or the stop is pending), so a caller
// can multiplex readers in its own event loop. Safe for concurrent use
// of setDeadline and stopWait with one wait at a time; add/del/closeFDs
// by the goroutine that owns the reader's lock.
type readPoll struct {
	epfd     int
	stop     int
	deadline atomic.Int64 // unix nanoseconds; 0 = none
	// recheck, if not zero, bounds each wait: wait returns nil after it
	// even with no wakeup (readers whose wakeups are not meant for them).
	recheck time.Duration
}

func newReadPoll() (*readPoll, error) {
	p := &readPoll{epfd: -1, stop: -1}
	var err error
	if p.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if p.stop, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		p.closeFDs()
		return nil, os.NewSyscallError("eventfd", err)
	}
	if err := p.add(p.stop); err != nil {
		p.closeFDs()
		return nil, err
	}
	return p, nil
}

// add watches the eventfd fd (not owned by p).
func (p *readPoll) add(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// del stops watching fd.
func (p *readPoll) del(fd int) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil) }

// wait blocks until a watched eventfd is readable, drains the ready ones
// and returns: ErrReaderClosed once stopWait was called,
// os.ErrDeadlineExceeded once the deadline passed.
func (p *readPoll) wait() error {
	var evs [8]unix.EpollEvent
	for {
		timeout, capped := -1, false
		if d := p.deadline.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		if r := int(p.recheck / time.Millisecond); r > 0 && (timeout < 0 || r < timeout) {
			timeout, capped = r, true
		}
		n, err := unix.EpollWait(p.epfd, evs[:], timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("epoll_wait", err)
		}
		if n == 0 {
			if capped {
				return nil // look again
			}
			continue // the deadline is checked above
		}
		var b [8]byte
		for i := range evs[:n] {
			if int(evs[i].Fd) == p.stop {
				return ErrReaderClosed
			}
			unix.Read(int(evs[i].Fd), b[:])
		}
		return nil
	}
}

// setDeadline sets the deadline of wait; the zero time means none.
func (p *readPoll) setDeadline(t time.Time) {
	if t.IsZero() {
		p.deadline.Store(0)
		return
	}
	p.deadline.Store(t.UnixNano())
}

// stopWait makes a wait in progress (and every later one) return
// ErrReaderClosed.
func (p *readPoll) stopWait() {
	one := [8]byte{1}
	unix.Write(p.stop, one[:])
}

func (p *readPoll) closeFDs() {
	if p.epfd >= 0 {
		unix.Close(p.epfd)
		p.epfd = -1
	}
	if p.stop >= 0 {
		unix.Close(p.stop)
		p.stop = -1
	}
}
