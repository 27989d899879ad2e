package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/client"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want uint64
		err  bool
	}{
		{name: "empty", in: "", want: 0},
		{name: "bytes", in: "4096", want: 4096},
		{name: "kilo", in: "4K", want: 4 << 10},
		{name: "mebi spelled out", in: "64MiB", want: 64 << 20},
		{name: "megabytes are mebibytes", in: "64MB", want: 64 << 20},
		{name: "giga lower case", in: "2g", want: 2 << 30},
		{name: "tera", in: "1T", want: 1 << 40},
		{name: "spaces", in: " 8 M ", want: 8 << 20},
		{name: "fraction", in: "1.5G", err: true},
		{name: "negative", in: "-1", err: true},
		{name: "unknown unit", in: "3X", err: true},
		{name: "overflow", in: "20000000T", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

// TestLimitOptions: the resource limits come from flags, the environment
// or the config file like every setting, and bad values are usage errors.
func TestLimitOptions(t *testing.T) {
	dirs := tempDirsArgs(t)
	var errb strings.Builder
	o, err := ParseOptions(append([]string{"--socket", "/x", "--max-memory", "2G", "--bulk-slots", "3"}, dirs...),
		env(map[string]string{"BPFD_MEMORY_QUOTA": "64M", "BPFD_BULK_NICE": "5"}), &errb)
	if err != nil {
		t.Fatal(err)
	}
	l, err := o.Limits()
	if err != nil || l != (Limits{MaxMemory: 2 << 30, MemoryQuota: 64 << 20, BulkSlots: 3, BulkNice: 5}) {
		t.Fatalf("limits %+v, %v", l, err)
	}
	// Bulk work is niced by default; 0 turns it off.
	for val, want := range map[string]int{"": 10, "0": 0} {
		args := append([]string{"--socket", "/x"}, dirs...)
		if val != "" {
			args = append(args, "--bulk-nice", val)
		}
		o, err := ParseOptions(args, env(nil), &errb)
		if err != nil {
			t.Fatal(err)
		}
		if l, err := o.Limits(); err != nil || l.BulkNice != want {
			t.Errorf("--bulk-nice %q: %+v, %v; want %d", val, l, err, want)
		}
	}
	for _, bad := range [][]string{{"--max-memory", "lots"}, {"--bulk-slots", "-2"}, {"--map-memory-quota", "1.5G"},
		{"--bulk-nice", "20"}, {"--bulk-nice", "-1"}} {
		if _, err := ParseOptions(append(append([]string{"--socket", "/x"}, dirs...), bad...), env(nil), &errb); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestLimitsReachTheServer: a daemon process started with limits reports
// them in its status.
func TestLimitsReachTheServer(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "bpfd.sock")
	cmd := daemonCmd("--socket", sock, "--pin-root", filepath.Join(dir, "pins"), "--state-dir", filepath.Join(dir, "state"),
		"--max-memory", "256M", "--memory-quota", "48M", "--map-memory-quota", "32M", "--bulk-slots", "2")
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitSocket(t, sock)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxMemory != 256<<20 || st.BulkSlots != 2 {
		t.Fatalf("status: max_memory %d, bulk_slots %d\n%s", st.MaxMemory, st.BulkSlots, errb.String())
	}
	// Bulk work runs niced (--bulk-nice's default) where the daemon may
	// give threads their priority back: root has CAP_SYS_NICE.
	if os.Geteuid() == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(errb.String(), `"bulk_nice": 10`) {
			if time.Now().After(deadline) {
				t.Fatalf("the daemon does not log bulk_nice 10:\n%s", errb.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The per-uid defaults apply to uids other than root.
	if len(st.UIDs) == 1 && st.UIDs[0].UID != 0 {
		if q := st.UIDs[0].Quota; q.Memory != 48<<20 || q.MapMemory != 32<<20 {
			t.Fatalf("quota %+v", q)
		}
	}
}
