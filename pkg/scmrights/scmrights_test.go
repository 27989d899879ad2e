package scmrights

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func TestMain(m *testing.M) {
	// Go's network poller opens its epoll fd and eventfd on first use and
	// keeps them: start it before taking the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := countFDs()
	code := m.Run()
	if after := countFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "fd leak: %d fds open before tests, %d after\n", before, after)
		code = 1
	}
	os.Exit(code)
}

func socketpair(t *testing.T) (a, b int) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// openFiles returns n fresh fds (pipe ends), closed at cleanup.
func openFiles(t *testing.T, n int) []int {
	t.Helper()
	var fds []int
	for len(fds) < n {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, p[0], p[1])
	}
	for _, fd := range fds[n:] {
		unix.Close(fd)
	}
	fds = fds[:n]
	t.Cleanup(func() { CloseAll(fds) })
	return fds
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestRecvmsg(t *testing.T) {
	tests := []struct {
		name    string
		send    int // fds sent
		maxFDs  int // cap of the receive slice
		oobFDs  int // fds the control buffer holds
		bufLen  int
		wantErr error
		wantN   int
	}{
		{name: "no fds", send: 0, maxFDs: 4, oobFDs: 4, bufLen: 64, wantN: 5},
		{name: "one fd", send: 1, maxFDs: 4, oobFDs: 4, bufLen: 64, wantN: 5},
		{name: "at cap", send: 4, maxFDs: 4, oobFDs: 4, bufLen: 64, wantN: 5},
		{name: "over cap", send: 5, maxFDs: 4, oobFDs: 8, bufLen: 64, wantErr: ErrTooManyFDs},
		{name: "ctrunc", send: 6, maxFDs: 8, oobFDs: 2, bufLen: 64, wantErr: ErrCtrunc},
		{name: "no fds wanted", send: 1, maxFDs: 0, oobFDs: 1, bufLen: 64, wantErr: ErrTooManyFDs},
		{name: "data truncated", send: 2, maxFDs: 4, oobFDs: 4, bufLen: 3, wantErr: ErrTrunc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := socketpair(t)
			base := countFDs()
			fds := openFiles(t, tt.send)
			if err := Sendmsg(a, []byte("hello"), fds); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, tt.bufLen)
			oob := make([]byte, OOBSize(tt.oobFDs))
			n, got, _, err := Recvmsg(b, buf, oob, make([]int, 0, tt.maxFDs))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if len(got) != 0 {
					t.Fatalf("got fds %v on error", got)
				}
				CloseAll(fds)
				fds = fds[:0]
				if c := countFDs(); c != base {
					t.Fatalf("fd count %d after failed receive, want baseline %d: received fds leaked", c, base)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.wantN || string(buf[:n]) != "hello" {
				t.Fatalf("got %q", buf[:n])
			}
			if len(got) != tt.send {
				t.Fatalf("got %d fds, want %d", len(got), tt.send)
			}
			for _, fd := range got {
				fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
				if err != nil {
					t.Fatal(err)
				}
				if fl&unix.FD_CLOEXEC == 0 {
					t.Errorf("received fd %d lacks FD_CLOEXEC", fd)
				}
			}
			CloseAll(got)
		})
	}
}

func TestParseRightsClosesOnMalformed(t *testing.T) {
	fds := openFiles(t, 2)
	dup0, err := unix.Dup(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	oob := putRights(make([]byte, OOBSize(1)), []int{dup0})
	oob = append(oob, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1, 0, 0, 0) // bad length
	got, err := ParseRights(oob, make([]int, 0, 4), 0)
	if !errors.Is(err, ErrBadControl) || len(got) != 0 {
		t.Fatalf("got %v, %v; want ErrBadControl", got, err)
	}
	if isOpen(dup0) {
		t.Fatal("fd from malformed control data left open")
	}
}

func TestSendmsgTooMany(t *testing.T) {
	a, _ := socketpair(t)
	err := Sendmsg(a, []byte("x"), make([]int, MaxSendFDs+1))
	if !errors.Is(err, ErrTooManyFDs) {
		t.Fatalf("err = %v", err)
	}
}

func TestSendmsgSyscallError(t *testing.T) {
	a, b := socketpair(t)
	_ = b
	var se *os.SyscallError
	err := Sendmsg(-1, []byte("x"), nil)
	if !errors.As(err, &se) || se.Syscall != "sendmsg" || !errors.Is(err, unix.EBADF) {
		t.Fatalf("err = %#v", err)
	}
	_, _, _, err = Recvmsg(-1, make([]byte, 1), nil, nil)
	if !errors.As(err, &se) || se.Syscall != "recvmsg" {
		t.Fatalf("err = %#v", err)
	}
	_ = a
}

func TestPeerCredCookiePidfd(t *testing.T) {
	a, b := socketpair(t)
	u, err := PeerCred(a)
	if err != nil {
		t.Fatal(err)
	}
	if int(u.Pid) != os.Getpid() || int(u.Uid) != os.Getuid() {
		t.Fatalf("PeerCred = %+v, want pid %d uid %d", u, os.Getpid(), os.Getuid())
	}
	ca, err := Cookie(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Cookie(b)
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := Cookie(a)
	if ca == 0 || ca == cb || ca != ca2 {
		t.Fatalf("cookies a=%d b=%d a again=%d", ca, cb, ca2)
	}
	// A copy of the socket (as SCM_RIGHTS makes) has the same cookie.
	d, err := unix.Dup(a)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(d)
	if cd, _ := Cookie(d); cd != ca {
		t.Fatalf("dup cookie %d != %d", cd, ca)
	}
	pfd, err := PeerPidfd(a)
	if errors.Is(err, ErrNoPidfd) {
		t.Skip("pidfds not supported by this kernel")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	// The pidfd names this process: sending signal 0 through it works.
	if err := unix.PidfdSendSignal(pfd, 0, nil, 0); err != nil {
		t.Fatalf("pidfd_send_signal: %v", err)
	}
	if _, err := Cookie(openFiles(t, 1)[0]); !errors.Is(err, unix.ENOTSOCK) {
		t.Fatalf("Cookie(pipe) err = %v, want ENOTSOCK", err)
	}
}

func unixConnPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sp")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return mk(p[0]), mk(p[1])
}

func TestConn(t *testing.T) {
	ca, cb := unixConnPair(t)
	fds := openFiles(t, 3)
	if err := SendConn(ca, []byte("abc"), fds...); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, got, err := RecvConn(cb, buf, 4)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "abc" || len(got) != 3 {
		t.Fatalf("got %q %v", buf[:n], got)
	}
	CloseAll(got)
	u, err := mustConn(t, ca).PeerCred()
	if err != nil || int(u.Pid) != os.Getpid() {
		t.Fatalf("PeerCred = %+v, %v", u, err)
	}
	// A blocked Recv returns when the conn is closed.
	c := mustConn(t, cb)
	done := make(chan error)
	go func() {
		_, _, _, err := c.Recv(buf, nil, nil)
		done <- err
	}()
	cb.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Recv after close: %v", err)
	}
}

func mustConn(t *testing.T, c *net.UnixConn) *Conn {
	t.Helper()
	cn, err := NewConn(c)
	if err != nil {
		t.Fatal(err)
	}
	return cn
}

func TestConnAllocs(t *testing.T) {
	ca, cb := unixConnPair(t)
	a, b := mustConn(t, ca), mustConn(t, cb)
	fds := openFiles(t, 1)
	msg := []byte("ping")
	buf := make([]byte, 64)
	oob := make([]byte, OOBSize(2))
	rfds := make([]int, 0, 2)
	allocs := testing.AllocsPerRun(200, func() {
		if err := a.Send(msg, fds); err != nil {
			t.Fatal(err)
		}
		_, got, _, err := b.Recv(buf, oob, rfds)
		if err != nil || len(got) != 1 {
			t.Fatal(err, got)
		}
		unix.Close(got[0])
	})
	if allocs != 0 {
		t.Fatalf("Send+Recv allocate %.1f times per message, want 0", allocs)
	}
	ra, rb := socketpair(t)
	allocs = testing.AllocsPerRun(200, func() {
		if err := Sendmsg(ra, msg, fds); err != nil {
			t.Fatal(err)
		}
		_, got, _, err := Recvmsg(rb, buf, oob, rfds)
		if err != nil || len(got) != 1 {
			t.Fatal(err, got)
		}
		unix.Close(got[0])
	})
	if allocs != 0 {
		t.Fatalf("Sendmsg+Recvmsg allocate %.1f times per message, want 0", allocs)
	}
}
