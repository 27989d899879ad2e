package errno

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSentinel(t *testing.T) {
	errA := New(unix.ENOENT, "key does not exist")
	errB := New(unix.ENOENT, "other")
	wrapped := fmt.Errorf("lookup: %w", errA)

	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"self", errA, errA, true},
		{"errno", errA, unix.ENOENT, true},
		{"wrapped self", wrapped, errA, true},
		{"wrapped errno", wrapped, unix.ENOENT, true},
		{"other sentinel same errno", errA, errB, false},
		{"other errno", errA, unix.EPERM, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Fatalf("errors.Is(%v, %v) = %v, want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}

func TestOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want unix.Errno
	}{
		{"nil", nil, 0},
		{"sentinel", New(unix.E2BIG, "full"), unix.E2BIG},
		{"wrapped sentinel", fmt.Errorf("x: %w", New(unix.EEXIST, "exists")), unix.EEXIST},
		{"raw errno", fmt.Errorf("x: %w", unix.EBADF), unix.EBADF},
		{"plain", errors.New("plain"), unix.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.err, unix.EIO); got != tt.want {
				t.Fatalf("Of(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
