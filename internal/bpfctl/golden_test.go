package bpfctl

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// goldenCases are scripts of bpfctl commands run in order against a fresh
// daemon; each script's transcript (command, stdout, stderr, exit code) is
// compared with testdata/golden/NAME.txt. "$DIR" in an argument is the
// test's temporary directory and "$TESTDATA" this package's testdata.
var goldenCases = []struct {
	name  string
	steps [][]string
}{
	{
		name: "map_hash",
		steps: [][]string{
			{"map", "create", "hash", "--key-size", "4", "--value-size", "8", "--max-entries", "4", "--name", "ports", "--pin", "ports", "--file-mode", "0640"},
			{"map", "update", "ports", "key", "0x50", "0x00", "0x00", "0x00", "value", "1", "0", "0", "0", "0", "0", "0", "0"},
			{"map", "update", "ports", "key", "hex", "bb", "01", "00", "00", "value", "hex", "ff", "00", "00", "00", "00", "00", "00", "01", "noexist"},
			{"map", "update", "ports", "--key-u32", "8080", "--value-u64", "0x1122334455667788"},
			{"map", "lookup", "ports", "key", "0x50", "0", "0", "0"},
			{"-j", "map", "lookup", "ports", "--key-u32", "80"},
			{"map", "dump", "ports"},
			{"-j", "map", "dump", "ports"},
			{"map", "show", "ports"},
			{"-j", "map", "info", "ports"},
			{"map", "delete", "ports", "--key-u32", "443"},
			{"-j", "map", "delete", "ports", "--key-u32", "443"},
			{"map", "lookup", "ports", "--key-u32", "443"},
			{"-j", "map", "lookup", "ports", "--key-u32", "443"},
			{"map", "update", "ports", "--key-u32", "80", "--value-u64", "2", "--noexist"},
			{"map", "update", "ports", "--key-u32", "9", "--value-u64", "2", "exist"},
			{"map", "lookup", "ports", "key", "1", "2", "3"},
			{"map", "lookup", "ports", "key", "256", "0", "0", "0"},
			{"map", "lookup", "ports", "--key-u64", "1"},
			{"map", "lookup", "ports", "key", "1", "0", "0", "0", "--key-u32", "1"},
			{"map", "freeze", "ports"},
			{"map", "update", "ports", "--key-u32", "80", "--value-u64", "3"},
			{"map", "show", "ports"},
			{"map", "dump", "ports"},
		},
	},
	{
		name: "map_array",
		steps: [][]string{
			{"map", "create", "array", "--key-size", "4", "--value-size", "20", "--max-entries", "2", "--flags", "rdonly_prog", "--pin", "arr"},
			{"map", "update", "arr", "--key-u32", "1", "value", "hex", "000102030405060708090a0b0c0d0e0f10111213"},
			{"map", "dump", "arr"},
			{"map", "getnext", "arr"},
			{"-j", "map", "getnext", "arr", "key", "hex", "00000000"},
			{"map", "getnext", "arr", "--key-u32", "1"},
			{"map", "update", "arr", "--key-u32", "2", "value", "hex", "000102030405060708090a0b0c0d0e0f10111213"},
			{"map", "delete", "arr", "--key-u32", "0"},
			{"map", "show", "arr"},
			{"map", "create", "hash", "--key-size", "0", "--value-size", "8", "--max-entries", "4", "--pin", "bad"},
			{"map", "create", "nosuch", "--key-size", "4", "--value-size", "8", "--max-entries", "4", "--pin", "bad"},
			{"map", "create", "hash", "--key-size", "4", "--value-size", "8", "--max-entries", "4", "--flags", "sparkly", "--pin", "bad"},
			{"map", "create", "hash", "--key-size", "4", "--value-size", "8", "--max-entries", "4"},
			{"map", "create", "array", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "arr"},
		},
	},
	{
		name: "pins",
		steps: [][]string{
			{"pin", "mkdir", "net"},
			{"pin", "mkdir", "--parents", "net/filters/v4"},
			{"map", "create", "hash", "--key-size", "2", "--value-size", "1", "--max-entries", "8", "--name", "allow", "--pin", "net/allow", "--file-mode", "0640"},
			{"reopen", "net/allow", "--mode", "r", "--pin", "net/allow.ro", "--file-mode", "0644"},
			{"reopen", "net/allow", "--mode", "w", "--pin", "net/allow.wo", "--file-mode", "0620"},
			{"reopen", "net/allow.ro", "--mode", "rw", "--pin", "net/allow.rw"},
			{"pin", "ls"},
			{"-j", "pin", "ls", "net"},
			{"map", "update", "net/allow.wo", "--key-u16", "22", "--value-u8", "1"},
			{"map", "update", "net/allow.ro", "--key-u16", "22", "--value-u8", "1"},
			{"map", "dump", "net/allow.ro"},
			{"map", "dump", "net/allow.wo"},
			{"map", "show", "net/allow.wo"},
			{"map", "show", "net/nosuch"},
			{"map", "create", "hash", "--key-size", "2", "--value-size", "1", "--max-entries", "8", "--pin", "net/allow"},
			{"map", "create", "hash", "--key-size", "2", "--value-size", "1", "--max-entries", "8", "--pin", "nodir/x"},
			{"map", "show", "$DIR/bpfd.sock"},
			{"reopen", "net/allow", "--mode", "x", "--pin", "y"},
		},
	},
	{
		name: "prog_asm",
		steps: [][]string{
			{"map", "create", "array", "--key-size", "4", "--value-size", "8", "--max-entries", "1", "--name", "count", "--pin", "count"},
			{"prog", "load", "--type", "socket_filter", "--asm", "$TESTDATA/count.s", "--map", "0=count:r", "--pin", "count_prog"},
			{"prog", "load", "--type", "socket_filter", "--asm", "$TESTDATA/count.s", "--pin", "count_prog"},
			{"prog", "load", "--type", "socket_filter", "--asm", "$TESTDATA/count.s", "--map", "count", "--pin", "count_prog"},
			{"prog", "show", "count_prog"},
			{"-j", "prog", "show", "count_prog"},
			{"prog", "dump", "count_prog"},
			{"-j", "prog", "dump", "count_prog"},
			{"prog", "run", "count_prog", "--data-hex", "ffffffffffff 000000000001 0800 4500001c 00000000 40110000 7f000001 7f000001 0035 0035 0008 0000", "--repeat", "3"},
			{"-j", "prog", "run", "count_prog", "--data-hex", "ffffffffffff00000000000108004500001c0000000040110000 7f000001 7f000001 00350035 00080000"},
			{"map", "dump", "count"},
			{"prog", "run", "count_prog", "--data-hex", "zz"},
			{"prog", "load", "--type", "nosuch", "--asm", "$TESTDATA/count.s", "--pin", "x"},
			{"prog", "load", "--type", "xdp", "--pin", "x"},
		},
	},
	{
		name: "prog_object",
		steps: [][]string{
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/counter.bpf.o", "--pin-dir", "counter"},
			{"pin", "ls", "counter"},
			{"prog", "dump", "counter/count_proto"},
			{"prog", "run", "counter/count_proto", "--data-hex", "ffffffffffff 000000000001 0800 4500001c 00000000 40110000 7f000001 7f000001 0035 0035 0008 0000"},
			{"map", "dump", "counter/by_proto"},
			{"-j", "prog", "load", "$TESTDATA/../../../testdata/bpf/counter.bpf.o", "--pin-dir", "counter2"},
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/counter.bpf.o", "--pin-dir", "counter"},
			{"pin", "ls", "counter"},
		},
	},
	{
		name: "prog_run",
		steps: [][]string{
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/seccomp_policy.bpf.o", "--pin-dir", "sec"},
			{"prog", "run", "sec/policy", "--ctx-hex", "29000000"},
			{"prog", "run", "sec/policy", "--data-hex", "0000000000000000000000000000", "--ctx-hex", seccompCtx(41, 10)},
			{"prog", "run", "sec/policy", "--ctx-hex", seccompCtx(41, 10)},
			{"-j", "prog", "run", "sec/policy", "--ctx-hex", seccompCtx(41, 10)},
			{"prog", "run", "sec/policy", "--ctx-hex", seccompCtx(0, 0)},
			{"prog", "run", "sec/policy"},
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/xdp_ports.bpf.o", "--pin-dir", "xdp"},
			{"prog", "run", "xdp/xdp_ports", "--data-hex", "00112233"},
			{"prog", "run", "xdp/xdp_ports", "--data-hex", "ffffffffffff 000000000001 0806 0001"},
			{"prog", "run", "xdp/xdp_ports", "--data-hex", "ffffffffffff 000000000001 0800 4500001c 00000000 40110000 7f000001 7f000001 0035 0035 0008 0000",
				"--data-out", "$DIR/out.bin"},
			{"prog", "run", "xdp/xdp_ports", "--data-hex", "ffffffffffff 000000000001 0800", "--ctx-hex", "01"},
			{"prog", "run", "xdp/xdp_ports", "--data-hex", "00", "--data", "$DIR/out.bin"},
			{"prog", "run", "xdp/xdp_ports", "--data", "$DIR/nosuch.bin"},
		},
	},
	{
		name: "prog_array",
		steps: [][]string{
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/tailcall.bpf.o", "--pin-dir", "tc"},
			// skb->len % 4 picks the slot: 28 bytes after the Ethernet header is 0.
			{"prog", "run", "tc/entry", "--data-hex", udpFrame},
			{"map", "update", "tc/jump_table", "key", "0", "0", "0", "0", "value", "pinned", "tc/slot0"},
			{"prog", "run", "tc/entry", "--data-hex", udpFrame},
			{"map", "update", "tc/jump_table", "--key-u32", "0", "value", "pinned", "tc/slot1"},
			{"prog", "run", "tc/entry", "--data-hex", udpFrame},
			{"map", "delete", "tc/jump_table", "--key-u32", "0"},
			{"prog", "run", "tc/entry", "--data-hex", udpFrame},
			{"map", "create", "prog_array", "--key-size", "4", "--value-size", "4", "--max-entries", "2", "--pin", "jmp"},
			{"map", "update", "jmp", "key", "1", "0", "0", "0", "value", "pinned", "tc/slot1"},
			{"map", "update", "jmp", "key", "0", "0", "0", "0", "value", "1", "0", "0", "0"},
			{"map", "update", "jmp", "key", "0", "0", "0", "0", "value", "pinned", "tc/jump_table"},
			{"map", "update", "jmp", "key", "0", "0", "0", "0", "value", "pinned", "tc/nosuch"},
			{"map", "update", "jmp", "key", "2", "0", "0", "0", "value", "pinned", "tc/slot0"},
		},
	},
	{
		name: "listing",
		steps: [][]string{
			{"map", "show"},
			{"-j", "map", "show"},
			{"map", "create", "hash", "--key-size", "4", "--value-size", "8", "--max-entries", "4", "--name", "ports", "--pin", "ports"},
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/counter.bpf.o", "--pin-dir", "counter"},
			{"reopen", "ports", "--mode", "r", "--pin", "ports.ro"},
			{"prog", "run", "counter/count_proto", "--data-hex", udpFrame, "--repeat", "5"},
			{"map", "show"},
			{"-j", "map", "show"},
			{"map", "show", "id", "3"},
			{"map", "show", "name", "ports"},
			{"-j", "map", "show", "name", "by_proto"},
			{"map", "show", "pinned", "ports.ro"},
			{"prog", "show"},
			{"-j", "prog", "show", "id", "4"},
			{"link", "show"},
			{"-j", "link", "show"},
			{"map", "show", "id", "99"},
			{"map", "show", "id", "x"},
			{"map", "show", "name", "nosuch"},
			{"prog", "show", "id", "1"},
			{"map", "show", "counter/count_proto"},
			{"map", "show", "id"},
		},
	},
	{
		name: "btf",
		steps: [][]string{
			{"prog", "load", "$TESTDATA/../../../testdata/bpf/counter.bpf.o", "--pin-dir", "c"},
			{"prog", "run", "c/count_proto", "--data-hex", udpFrame, "--repeat", "3"},
			{"map", "dump", "c/by_proto"},
			{"-j", "map", "dump", "c/by_proto"},
			{"map", "lookup", "c/by_proto", "key", "json", "2048"},
			{"-j", "map", "lookup", "c/by_proto", "--key-u32", "2048"},
			{"map", "update", "c/by_proto", "key", "json", "8", "value", "json", `{"packets": 1000, "bytes": 64000}`},
			{"map", "lookup", "c/by_proto", "key", "json", "8"},
			{"map", "lookup", "c/by_proto", "key", "8", "0", "0", "0"},
			{"map", "update", "c/by_proto", "key", "json", "9", "value", "json", `{"packets": 1}`},
			{"map", "lookup", "c/by_proto", "key", "hex", "09000000"},
			{"map", "update", "c/by_proto", "key", "json", "9", "value", "json", `{"pakets": 1}`},
			{"map", "update", "c/by_proto", "key", "json", "9", "value", "json", `{"packets": -1}`},
			{"map", "update", "c/by_proto", "key", "json", `"x"`, "value", "json", `{}`},
			{"map", "update", "c/by_proto", "key", "json", "9", "value", "json", `{"packets": 1`},
			{"map", "show", "c/by_proto"},
			{"map", "create", "hash", "--key-size", "4", "--value-size", "4", "--max-entries", "2", "--pin", "plain"},
			{"map", "update", "plain", "key", "json", "1", "value", "1", "0", "0", "0"},
		},
	},
	{
		name: "status",
		steps: [][]string{
			{"status"},
			{"map", "create", "hash", "--key-size", "4", "--value-size", "4", "--max-entries", "16", "--pin", "m"},
			{"status"},
			{"-j", "status"},
			{"-p", "status"},
		},
	},
	{
		// Node ids: 1 the creating descriptor, 2 pin m, 3 the descriptor
		// reopen opened from m, 4 pin m.ro, 5 and 6 likewise for m.ro2,
		// then the descriptors lineage and revoke open from m.
		name: "lineage",
		steps: [][]string{
			{"map", "create", "array", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "m", "--file-mode", "0644"},
			{"reopen", "m", "--mode", "r", "--pin", "m.ro", "--file-mode", "0644"},
			{"reopen", "m.ro", "--mode", "r", "--pin", "m.ro2", "--file-mode", "0644"},
			{"lineage", "m"},
			{"-j", "lineage", "m"},
			{"lineage", "m.ro"},
			{"revoke", "m", "99"},
			{"revoke", "m", "x"},
			{"revoke", "m", "4"},
			{"lineage", "m"},
			{"map", "show", "m.ro2"},
			{"map", "show", "m"},
		},
	},
	{
		name: "usage",
		steps: [][]string{
			{"nosuch"},
			{"map", "lookup"},
			{"map", "create", "hash", "--key-size", "4"},
			{"map", "lookup", "m", "value", "1"},
			{"--socket", "$DIR/nosuch.sock", "status"},
			{"-j", "--socket", "$DIR/nosuch.sock", "status"},
			{"exec", "--map", "m:x", "--", "true"},
			{"map", "lokup", "m"},
			{"map", "list"},
			{"map"},
			{"pin", "rm", "x"},
			{"prog", "shwo"},
			{"seccomp", "run"},
			{"completion"},
			{"help", "map", "lokup"},
			{"help", "nosuch"},
			{"map", "create", "hash", "--kye-size", "4"},
			{"map", "create", "hash", "--mode", "0640"},
			{"pin", "mkdir", "d", "--mode", "0755"},
			{"--sokcet", "x", "status"},
			{"status", "extra"},
			{"prog", "load", "$DIR/nosuch.o", "--pin-dir", "x"},
			{"prog", "load", "--type", "xdp", "--asm", "$DIR/nosuch.s", "--pin", "x"},
			{"seccomp", "exec", "--filter", "p", "--syscalls", "sockte", "--", "true"},
		},
	},
}

// seccompCtx is a struct seccomp_data for syscall nr on x86_64 with
// args[0] = arg0, in hex.
func seccompCtx(nr uint32, arg0 uint64) string {
	b := binary.LittleEndian.AppendUint32(nil, nr)
	b = binary.LittleEndian.AppendUint32(b, 0xc000003e)
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint64(b, arg0)
	return hex.EncodeToString(append(b, make([]byte, 40)...))
}

// udpFrame is an Ethernet/IPv4/UDP frame with 28 bytes after the
// Ethernet header, in hex.
const udpFrame = "ffffffffffff00000000000108004500001c0000000040110000 7f000001 7f000001 0035 0035 0008 0000"

var (
	reDuration = regexp.MustCompile(`(duration: )\S+|("duration":)\d+`)
	reStarted  = regexp.MustCompile(`("started": ?)"[^"]*"|("uptime_seconds": ?)[0-9.e+-]+`)
	reUID      = regexp.MustCompile(`("(?:owner_)?uid": ?|"gid": ?|owner_uid )\d+`)
	// The daemon's own memory charges depend on its internal sizes.
	reMemory   = regexp.MustCompile(`("memory": ?)\d+`)
	reStatusID = regexp.MustCompile(`(?m)^\d+(\s+\d+/)`)
	reSpaces   = regexp.MustCompile(` {2,}`)
	reLoader   = regexp.MustCompile(`(loader \S+\()\d+\)`)
	reLoaderJS = regexp.MustCompile(`("loader":\{"pid":)\d+`)
	reTextUID  = regexp.MustCompile(`(TIME  uid )\d+`)
	reRunTime  = regexp.MustCompile(`(run_time_ns"?:? ?)\d+`)
	reTimes    = regexp.MustCompile(`("(?:created_at|loaded_at|attached_at)": ?)\d+`)
	reNodeUID  = regexp.MustCompile(`(?m)^(\s*\d+\s+(?:descriptor|pin)\s+\S+\s+)\d+`)
)

// normalize removes what differs between runs: the temporary directory,
// durations, and uids (tests may run as root or not).
func normalize(s, dir string) string {
	s = strings.ReplaceAll(s, dir, "$DIR")
	s = reDuration.ReplaceAllString(s, "${1}${2}D")
	s = reStarted.ReplaceAllString(s, "${1}${2}T")
	s = reUID.ReplaceAllString(s, "${1}UID")
	s = reMemory.ReplaceAllString(s, "${1}M")
	s = reLoader.ReplaceAllString(s, "${1}PID)")
	s = reLoaderJS.ReplaceAllString(s, "${1}PID")
	s = reTextUID.ReplaceAllString(s, "${1}UID")
	s = reRunTime.ReplaceAllString(s, "${1}N")
	s = reTimes.ReplaceAllString(s, "${1}T")
	s = reNodeUID.ReplaceAllString(s, "${1}UID")
	if reStatusID.MatchString(s) {
		s = reStatusID.ReplaceAllString(s, "UID${1}")
		s = reSpaces.ReplaceAllString(s, "  ")
	}
	return s
}

func TestGolden(t *testing.T) {
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			var sb strings.Builder
			for _, step := range tc.steps {
				args := make([]string, len(step))
				for i, a := range step {
					a = strings.ReplaceAll(a, "$DIR", d.dir)
					args[i] = strings.ReplaceAll(a, "$TESTDATA", testdata)
				}
				if slices.Contains(step, "status") || slices.Contains(step, "show") || slices.Contains(step, "info") ||
					slices.Contains(step, "lineage") {
					d.settle(t)
				}
				r := d.run(t, args...)
				if len(step) >= 3 && step[len(step)-3] == "map" && step[len(step)-2] == "dump" {
					r.stdout = sortDump(t, r.stdout, slices.Contains(step, "-j"))
				}
				sb.WriteString("$ bpfctl " + strings.Join(step, " ") + "\n")
				sb.WriteString(normalize(r.stdout, d.dir))
				for _, l := range strings.SplitAfter(normalize(r.stderr, d.dir), "\n") {
					if l != "" {
						sb.WriteString("stderr: " + l)
					}
				}
				if r.stderr != "" && !strings.HasSuffix(r.stderr, "\n") {
					sb.WriteString("\n")
				}
				sb.WriteString("[exit " + strconv.Itoa(r.code) + "]\n\n")
			}
			got := sb.String()
			path := filepath.Join("testdata", "golden", tc.name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", path, diff(string(want), got))
			}
		})
	}
}

// sortDump sorts the elements of a map dump (hash maps iterate in an
// order that varies from run to run), human or JSON.
func sortDump(t *testing.T, out string, jsonOut bool) string {
	t.Helper()
	if strings.HasPrefix(out, "[") {
		// -j, or typed (BTF) text: a JSON array, indented in text.
		var elems []json.RawMessage
		if err := json.Unmarshal([]byte(out), &elems); err != nil {
			t.Fatalf("dump JSON: %v", err)
		}
		for i := range elems {
			var c bytes.Buffer
			json.Compact(&c, elems[i])
			elems[i] = c.Bytes()
		}
		slices.SortFunc(elems, func(a, b json.RawMessage) int { return bytes.Compare(a, b) })
		var b []byte
		var err error
		if jsonOut {
			b, err = json.Marshal(elems)
		} else {
			b, err = json.MarshalIndent(elems, "", "    ")
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	lines := strings.SplitAfter(out, "\n")
	n := 0
	for n < len(lines) && strings.HasPrefix(lines[n], "key: ") {
		n++
	}
	slices.Sort(lines[:n])
	return strings.Join(lines, "")
}

// diff shows the first differing lines of want and got.
func diff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\nwant: " + w + "\ngot:  " + g
		}
	}
	return "(no line differs)"
}
