package nfqueue

import (
	"os"
	"testing"

	"github.com/bpfd-project/bpfd/internal/netnstest"
)

// TestOwnNetNS: the caller's own namespace is recognised (so OpenStats
// and the daemon's interface dump need no setns, hence no CAP_SYS_ADMIN,
// for it), another namespace and a bad fd are not.
func TestOwnNetNS(t *testing.T) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Skipf("no network namespace files: %v", err)
	}
	defer self.Close()
	other := -1
	if netnstest.Missing() == "" {
		other = netnstest.New(t, "nfqown").FD()
	}
	tests := []struct {
		name  string
		netns int
		want  bool
	}{
		{name: "own namespace", netns: int(self.Fd()), want: true},
		{name: "no namespace", netns: -1, want: false},
		{name: "not a namespace fd", netns: int(os.Stdin.Fd()), want: false},
		{name: "another namespace", netns: other, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "another namespace" && other < 0 {
				t.Skip(netnstest.Missing())
			}
			if got := OwnNetNS(tt.netns); got != tt.want {
				t.Fatalf("OwnNetNS(%d) = %v, want %v", tt.netns, got, tt.want)
			}
		})
	}
	// The statistics of the own namespace open without entering it.
	r, err := OpenStats(int(self.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}
