package examples_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestMain fails the run if the tests leave fds open (connections to the
// daemon, pipes to the examples).
func TestMain(m *testing.M) {
	// Start the runtime's network poller (os.Pipe registers with it) so
	// that its fds are in the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := listFDs()
	code := m.Run()
	if after := listFDs(); code == 0 && len(after) > len(before) {
		fmt.Fprintf(os.Stderr, "FAIL: leaked fds: %d open before the tests, %d after\nbefore: %v\nafter:  %v\n",
			len(before), len(after), before, after)
		code = 1
	}
	os.Exit(code)
}

// listFDs describes the process's open fds ("n -> target").
func listFDs() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used
		}
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}
