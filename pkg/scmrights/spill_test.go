package scmrights

import (
	"bytes"
	"errors"
	"testing"
)

// countingSpill lends 64-byte buffers and counts what is out.
type countingSpill struct {
	out  int
	gets int
	bufs [][]byte
}

func (s *countingSpill) Get() []byte {
	s.out++
	s.gets++
	if n := len(s.bufs); n > 0 {
		b := s.bufs[n-1]
		s.bufs = s.bufs[:n-1]
		return b
	}
	return make([]byte, 64)
}

func (s *countingSpill) Put(b []byte) { s.out--; s.bufs = append(s.bufs, b) }

// TestRecvSpill: a message that fits the small buffer is returned in it
// and the spill buffer goes back at once; a longer one comes back whole
// in the spill buffer, which the caller then owns; one longer than the
// spill buffer fails with ErrTrunc and closes its fds; RecvmsgSpill
// agrees.
func TestRecvSpill(t *testing.T) {
	payload := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 1)
		}
		return b
	}
	tests := []struct {
		name    string
		size    int
		fds     int
		spilled bool
		err     error
	}{
		{name: "empty with an fd", size: 0, fds: 1},
		{name: "fits", size: 10},
		{name: "exactly the small buffer", size: 16, fds: 2},
		{name: "spills", size: 17, spilled: true},
		{name: "spills with fds", size: 40, fds: 3, spilled: true},
		{name: "fills the spill buffer", size: 64, spilled: true},
		{name: "too long", size: 65, fds: 1, err: ErrTrunc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, cb := unixConnPair(t)
			a, b := mustConn(t, ca), mustConn(t, cb)
			ra, rb := socketpair(t)
			fds := openFiles(t, tt.fds)
			want := payload(tt.size)
			small := make([]byte, 16)
			oob := make([]byte, OOBSize(4))
			var sp countingSpill
			check := func(how string, msg []byte, spilled bool, got []int, err error) {
				t.Helper()
				defer CloseAll(got)
				if tt.err != nil {
					if !errors.Is(err, tt.err) || len(got) != 0 {
						t.Fatalf("%s: err %v with %d fds, want %v", how, err, len(got), tt.err)
					}
					return
				}
				if err != nil || spilled != tt.spilled || !bytes.Equal(msg, want) || len(got) != tt.fds {
					t.Fatalf("%s: %x spilled=%v fds=%d err=%v; want %x spilled=%v fds=%d", how, msg, spilled, len(got), err, want, tt.spilled, tt.fds)
				}
			}
			if err := a.Send(want, fds); err != nil {
				t.Fatal(err)
			}
			msg, spilled, got, _, err := b.RecvSpill(small, &sp, oob, make([]int, 0, 4))
			check("RecvSpill", msg, spilled, got, err)
			if wantOut := map[bool]int{true: 1, false: 0}[spilled]; sp.out != wantOut || sp.gets != 1 {
				t.Fatalf("spill buffers out %d after %d gets, want %d", sp.out, sp.gets, wantOut)
			}
			if spilled {
				sp.Put(msg[:cap(msg)])
			}
			if err := Sendmsg(ra, want, fds); err != nil {
				t.Fatal(err)
			}
			msg, spilled, got, _, err = RecvmsgSpill(rb, small, make([]byte, 64), oob, make([]int, 0, 4))
			check("RecvmsgSpill", msg, spilled, got, err)
		})
	}
}

// TestRecvSpillAllocs: RecvSpill allocates nothing, spilled or not.
func TestRecvSpillAllocs(t *testing.T) {
	ca, cb := unixConnPair(t)
	a, b := mustConn(t, ca), mustConn(t, cb)
	small, oob, fds := make([]byte, 8), make([]byte, OOBSize(1)), make([]int, 0, 1)
	sp := &countingSpill{bufs: [][]byte{make([]byte, 64)}}
	for _, size := range []int{4, 40} {
		msg := make([]byte, size)
		allocs := testing.AllocsPerRun(100, func() {
			if err := a.Send(msg, nil); err != nil {
				t.Fatal(err)
			}
			got, spilled, _, _, err := b.RecvSpill(small, sp, oob, fds)
			if err != nil || len(got) != size {
				t.Fatal(err, len(got))
			}
			if spilled {
				sp.Put(got[:cap(got)])
			}
		})
		if allocs != 0 {
			t.Fatalf("RecvSpill of %d bytes allocates %.1f times", size, allocs)
		}
	}
}
