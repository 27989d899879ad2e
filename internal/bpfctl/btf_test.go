package bpfctl

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// hexWords parses -j bytes (["0x01", ...]).
func hexWords(t *testing.T, words []string) []byte {
	t.Helper()
	var b []byte
	for _, w := range words {
		v, err := hex.DecodeString(strings.TrimPrefix(w, "0x"))
		if err != nil || len(v) != 1 {
			t.Fatalf("byte %q", w)
		}
		b = append(b, v[0])
	}
	return b
}

// TestBTFRoundTrip: JSON in, the same bytes out; what dump prints goes
// back in as the same bytes; typed output for data sections and per-CPU
// maps.
func TestBTFRoundTrip(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "prog", "load", "../../testdata/bpf/counter.bpf.o", "--pin-dir", "c")
	d.mustRun(t, "map", "update", "c/by_proto", "key", "json", "8", "value", "json", `{"packets": 18446744073709551615, "bytes": 1}`)
	var got struct {
		Value     []string `json:"value"`
		Formatted struct {
			Value json.RawMessage `json:"value"`
		} `json:"formatted"`
	}
	if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "map", "lookup", "c/by_proto", "--key-u32", "8").stdout), &got); err != nil {
		t.Fatal(err)
	}
	want := append(binary.LittleEndian.AppendUint64(nil, ^uint64(0)), binary.LittleEndian.AppendUint64(nil, 1)...)
	if b := hexWords(t, got.Value); string(b) != string(want) {
		t.Fatalf("bytes stored %x, want %x", b, want)
	}
	// The formatted value back in, under another key: the same bytes.
	doc := got.Formatted.Value
	if string(doc) != `{"packets":18446744073709551615,"bytes":1}` {
		t.Fatalf("formatted %s", doc)
	}
	d.mustRun(t, "map", "update", "c/by_proto", "key", "json", "9", "value", "json", string(doc))
	var again struct {
		Value []string `json:"value"`
	}
	if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "map", "lookup", "c/by_proto", "key", "json", "9").stdout), &again); err != nil {
		t.Fatal(err)
	}
	if b := hexWords(t, again.Value); string(b) != string(want) {
		t.Fatalf("round trip stored %x, want %x", b, want)
	}

	// A data section: the variables by name.
	d.mustRun(t, "prog", "load", "../../testdata/bpf/globals.bpf.o", "--pin-dir", "g")
	out := d.mustRun(t, "map", "dump", "g/.data").stdout
	if !strings.Contains(out, `"total": 100`) {
		t.Fatalf("typed .data dump:\n%s", out)
	}

	// A per-CPU map with types made by the client: one value per CPU.
	c, err := client.Dial(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u32 := &btf.Int{Name: "__u32", Size: 4}
	m, err := c.NewMap(client.MapSpec{Type: client.PercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 1,
		Key: u32, Value: &btf.Struct{Name: "cnt", Size: 4, Members: []btf.Member{{Name: "n", Type: u32}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := c.Pin(m, "pc", 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustRun(t, "map", "update", "pc", "key", "json", "0", "value", "json", `{"n": 7}`)
	out = d.mustRun(t, "map", "lookup", "pc", "key", "json", "0").stdout
	if !strings.Contains(out, `"values": [`) || strings.Count(out, `"n": 7`) != client.PossibleCPUs() {
		t.Fatalf("per-CPU lookup (%d CPUs):\n%s", client.PossibleCPUs(), out)
	}
	if info, err := m.Info(); err != nil || info.BTFID == 0 {
		t.Fatalf("map made with Key/Value has no BTF: %+v %v", info, err)
	}
}
