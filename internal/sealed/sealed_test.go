package sealed

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMemfd(t *testing.T) {
	tests := []struct {
		name string
		data [][]byte
		want []byte
	}{
		{name: "empty", data: nil, want: []byte{}},
		{name: "one piece", data: [][]byte{[]byte("request")}, want: []byte("request")},
		{name: "pieces concatenated", data: [][]byte{[]byte("attr"), nil, []byte("data")}, want: []byte("attrdata")},
		{name: "large", data: [][]byte{bytes.Repeat([]byte{7}, 1<<20)}, want: bytes.Repeat([]byte{7}, 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, err := Memfd("test", tt.data...)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			got := make([]byte, len(tt.want)+1)
			n, err := unix.Pread(fd, got, 0)
			if err != nil || !bytes.Equal(got[:n], tt.want) {
				t.Fatalf("read %d bytes (%v), want the %d bytes written", n, err, len(tt.want))
			}
			seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
			if err != nil || seals&Seals != Seals {
				t.Fatalf("seals %#x (%v), want %#x", seals, err, Seals)
			}
			if _, err := unix.Pwrite(fd, []byte("x"), 0); err != unix.EPERM {
				t.Errorf("write to the sealed memfd: %v, want EPERM", err)
			}
			if err := unix.Ftruncate(fd, int64(len(tt.want))+1); err != unix.EPERM {
				t.Errorf("growing the sealed memfd: %v, want EPERM", err)
			}
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("fd flags %#x (%v), want close-on-exec", flags, err)
			}
		})
	}
}
