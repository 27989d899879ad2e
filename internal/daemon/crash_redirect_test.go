package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// TestCrashRedirectMaps is the crash test of the redirect maps
// (TestCrashKeepsAcknowledgedWrites covers the other types): pinned
// DEVMAP, DEVMAP_HASH and CPUMAP entries survive kill -9 and a clean
// restart; an XSKMAP is empty (bpfd never holds an entry).
func TestCrashRedirectMaps(t *testing.T) {
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, errb := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	lo := append(u32(1), u32(0)...) // ifindex 1, no program
	type entry struct{ key, value []byte }
	want := map[string][]entry{
		"devmap":      {{u32(0), lo}, {u32(3), lo}},
		"devmap_hash": {{u32(5), lo[:4]}, {u32(900), lo[:4]}},
		"cpumap":      {{u32(0), append(u32(64), u32(0)...)}},
	}
	specs := map[string]client.MapSpec{
		"devmap":      {Type: client.Devmap, KeySize: 4, ValueSize: 8, MaxEntries: 4},
		"devmap_hash": {Type: client.DevmapHash, KeySize: 4, ValueSize: 4, MaxEntries: 4},
		"cpumap":      {Type: client.CPUMap, KeySize: 4, ValueSize: 8, MaxEntries: 1},
		"xskmap":      {Type: client.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4},
	}
	for name, spec := range specs {
		m, err := c.NewMap(spec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, e := range want[name] {
			if err := m.Update(e.key, e.value, client.UpdateAny); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if err := c.Pin(m, name, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()

	check := func(when string) {
		t.Helper()
		c, err := client.Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for name, spec := range specs {
			m, err := c.OpenPinnedMap(name, client.ModeReadWrite)
			if err != nil {
				t.Fatalf("%s: %s: %v\n%s", when, name, err, errb.String())
			}
			for _, e := range want[name] {
				v := make([]byte, spec.ValueSize)
				if err := m.Lookup(e.key, v); err != nil || !bytes.Equal(v, e.value) {
					t.Errorf("%s: %s[%x] = %x, %v; want %x", when, name, e.key, v, err, e.value)
				}
			}
			if name == "xskmap" {
				if err := m.Lookup(u32(0), make([]byte, 4)); !errors.Is(err, client.ErrNotSupported) {
					t.Errorf("%s: xskmap lookup: %v, want EOPNOTSUPP", when, err)
				}
			}
			m.Close()
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	cmd, errb = startDaemon(t, sock, pins, state)
	check("after kill -9")
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
	cmd, errb = startDaemon(t, sock, pins, state)
	check("after a clean restart")
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
}
