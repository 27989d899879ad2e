package bpfctl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		name  string
		words []string
		n     int
		want  []byte
		err   string // substring of the usage error; "" = success
	}{
		{name: "hex prefixed", words: []string{"0x01", "0x00", "0xff", "0x7F"}, n: 4, want: []byte{1, 0, 0xff, 0x7f}},
		{name: "decimal", words: []string{"1", "0", "255", "16"}, n: 4, want: []byte{1, 0, 255, 16}},
		{name: "octal like strtoul", words: []string{"010", "0"}, n: 2, want: []byte{8, 0}},
		{name: "hex keyword", words: []string{"hex", "01", "00", "ff", "a"}, n: 4, want: []byte{1, 0, 0xff, 0x0a}},
		{name: "hex keyword joined", words: []string{"hex", "01000000"}, n: 4, want: []byte{1, 0, 0, 0}},
		{name: "hex keyword mixed", words: []string{"hex", "0100", "00", "00"}, n: 4, want: []byte{1, 0, 0, 0}},
		{name: "hex keyword with 0x", words: []string{"hex", "0x1f"}, n: 1, want: []byte{0x1f}},
		{name: "too few", words: []string{"1", "2", "3"}, n: 4, err: "expected 4 bytes, got 3"},
		{name: "too many", words: []string{"1", "2", "3", "4", "5"}, n: 4, err: "expected 4 bytes, got 5"},
		{name: "hex too many", words: []string{"hex", "0102030405"}, n: 4, err: "expected 4 bytes, got 5"},
		{name: "out of range", words: []string{"256"}, n: 1, err: "out of range"},
		{name: "negative", words: []string{"-1"}, n: 1, err: "error parsing byte"},
		{name: "garbage", words: []string{"one"}, n: 1, err: "error parsing byte"},
		{name: "bad hex", words: []string{"hex", "zz"}, n: 1, err: "error parsing hex byte"},
		{name: "odd hex", words: []string{"hex", "123"}, n: 2, err: "error parsing hex byte"},
		{name: "hex alone", words: []string{"hex"}, n: 1, err: "no bytes after"},
		{name: "empty", words: nil, n: 4, err: "no bytes given"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBytes("key", tc.words, tc.n)
			checkUsage(t, err, tc.err)
			if err == nil && !bytes.Equal(got, tc.want) {
				t.Errorf("got % x, want % x", got, tc.want)
			}
		})
	}
}

// checkUsage checks that err is nil (want "") or a usage error containing
// want.
func checkUsage(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ce *cliError
	if !errors.As(err, &ce) || ce.code != ExitUsage || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want a usage error containing %q", err, want)
	}
}

func TestSplitElemArgs(t *testing.T) {
	tests := []struct {
		name string
		args string
		want elemArgs
		err  string
	}{
		{name: "key", args: "key 1 2", want: elemArgs{key: []string{"1", "2"}, hasKey: true}},
		{name: "key value flag", args: "key 1 value hex 02 noexist",
			want: elemArgs{key: []string{"1"}, hasKey: true, value: []string{"hex", "02"}, hasValue: true, flag: client.UpdateNoExist, hasFlag: true}},
		{name: "exist", args: "key 1 value 2 exist",
			want: elemArgs{key: []string{"1"}, hasKey: true, value: []string{"2"}, hasValue: true, flag: client.UpdateExist, hasFlag: true}},
		{name: "value first", args: "value 2 key 1",
			want: elemArgs{key: []string{"1"}, hasKey: true, value: []string{"2"}, hasValue: true}},
		{name: "empty", args: "", want: elemArgs{}},
		{name: "bytes before key", args: "1 2", err: `unexpected "1"`},
		{name: "key twice", args: "key 1 key 2", err: "key given twice"},
		{name: "flag not last", args: "key 1 any value 2", err: "must come last"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitElemArgs(strings.Fields(tc.args))
			checkUsage(t, err, tc.err)
			if err == nil && fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestResolveBytes(t *testing.T) {
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	tests := []struct {
		name     string
		flags    []string // command-line flags
		words    []string
		has      bool
		size     int
		required bool
		want     []byte
		err      string
	}{
		{name: "u32", flags: []string{"--key-u32", "5"}, size: 4, want: []byte{5, 0, 0, 0}},
		{name: "u32 hex", flags: []string{"--key-u32=0x01020304"}, size: 4, want: []byte{4, 3, 2, 1}},
		{name: "u8", flags: []string{"--key-u8", "255"}, size: 1, want: []byte{255}},
		{name: "u16", flags: []string{"--key-u16", "443"}, size: 2, want: []byte{0xbb, 0x01}},
		{name: "u64 max", flags: []string{"--key-u64", "18446744073709551615"}, size: 8, want: u64(^uint64(0))},
		{name: "words", words: []string{"1", "0"}, has: true, size: 2, want: []byte{1, 0}},
		{name: "optional absent", size: 4},
		{name: "required absent", size: 4, required: true, err: "missing key"},
		{name: "size mismatch", flags: []string{"--key-u64", "1"}, size: 4, err: "gives 8 bytes but the map's key is 4 bytes"},
		{name: "overflow", flags: []string{"--key-u8", "256"}, size: 1, err: "not an unsigned 8-bit number"},
		{name: "negative", flags: []string{"--key-u32=-1"}, size: 4, err: "not an unsigned 32-bit number"},
		{name: "two widths", flags: []string{"--key-u32", "1", "--key-u64", "1"}, size: 4, err: "both given"},
		{name: "words and typed", flags: []string{"--key-u32", "1"}, words: []string{"1"}, has: true, size: 4, err: "both as bytes and with --key-u32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			tf := addTypedFlags(fs, "key")
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			got, err := resolveBytes("key", tc.words, tc.has, tf, tc.size, tc.required)
			checkUsage(t, err, tc.err)
			if err == nil && !bytes.Equal(got, tc.want) {
				t.Errorf("got % x, want % x", got, tc.want)
			}
		})
	}
}

func TestParseFDSpec(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want fdSpec
		err  string
	}{
		{name: "pin", in: "net/ports", want: fdSpec{name: "ports", pin: "net/ports", mode: client.ModeRead}},
		{name: "mode", in: "net/ports:rw", want: fdSpec{name: "ports", pin: "net/ports", mode: client.ModeReadWrite, modeSet: true}},
		{name: "write", in: "ports:w", want: fdSpec{name: "ports", pin: "ports", mode: client.ModeWrite, modeSet: true}},
		{name: "named", in: "cfg=net/ports:r", want: fdSpec{name: "cfg", pin: "net/ports", mode: client.ModeRead, named: true, modeSet: true}},
		{name: "equals in path", in: "/pins/a=b/c", want: fdSpec{name: "c", pin: "/pins/a=b/c", mode: client.ModeRead}},
		{name: "bad mode", in: "ports:x", err: `access mode "x"`},
		{name: "no pin", in: "cfg=", err: "no pin path"},
		{name: "empty name", in: "=ports", err: "empty name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFDSpec(tc.in, false)
			checkUsage(t, err, tc.err)
			if err == nil && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBindAndRewriteMaps(t *testing.T) {
	spec := func(s string) fdSpec {
		sp, err := parseFDSpec(s, false)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	tests := []struct {
		name  string
		specs []string
		want  []int
		err   string
	}{
		{name: "positions", specs: []string{"a", "b"}, want: []int{0, 1}},
		{name: "indexes", specs: []string{"3=a", "0=b"}, want: []int{3, 0}},
		{name: "name is position", specs: []string{"x=a", "y=b"}, want: []int{0, 1}},
		{name: "collision", specs: []string{"1=a", "b"}, err: "two maps bound to map_fd 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var specs []fdSpec
			for _, s := range tc.specs {
				specs = append(specs, spec(s))
			}
			got, err := bindMaps(specs)
			checkUsage(t, err, tc.err)
			for i, b := range got {
				if b.index != tc.want[i] {
					t.Errorf("binding %d: index %d, want %d", i, b.index, tc.want[i])
				}
			}
		})
	}

	// lddw r1, map_fd 1; lddw r2, map_value 0, 8; exit
	raw := []byte{
		0x18, 0x11, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x18, 0x22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0,
		0x95, 0, 0, 0, 0, 0, 0, 0,
	}
	if err := rewriteMapRefs(raw, map[int]int{0: 7, 1: 9}); err != nil {
		t.Fatal(err)
	}
	if fd := binary.LittleEndian.Uint32(raw[4:]); fd != 9 {
		t.Errorf("map_fd 1 -> %d, want 9", fd)
	}
	if fd, off := binary.LittleEndian.Uint32(raw[20:]), binary.LittleEndian.Uint32(raw[28:]); fd != 7 || off != 8 {
		t.Errorf("map_value 0, 8 -> fd %d off %d, want 7, 8", fd, off)
	}
	checkUsage(t, rewriteMapRefs(raw[:16], map[int]int{}), "no --map binds it")
	checkUsage(t, rewriteMapRefs(raw[:8], map[int]int{}), "without its second half")
}

func TestFailExitCodes(t *testing.T) {
	tests := []struct {
		name string
		k    kind
		elem bool
		err  error
		code int
		hint string // substring
	}{
		{name: "no such key", k: kRead, elem: true, err: client.ErrKeyNotExist, code: ExitNotFound},
		{name: "read-only descriptor", k: kWrite, elem: true, err: client.ErrPermission, code: ExitFailed, hint: "cannot write"},
		{name: "write-only descriptor", k: kRead, err: client.ErrPermission, code: ExitFailed, hint: "cannot read"},
		{name: "pin permissions", k: kOpen, err: &os.PathError{Op: "open", Path: "/p", Err: unix.EACCES}, code: ExitFailed, hint: "file's permissions"},
		{name: "pin grants less", k: kOpen, err: client.ErrAccess, code: ExitFailed, hint: "grants less"},
		{name: "missing pin", k: kOpen, err: &os.PathError{Op: "open", Path: "/p", Err: unix.ENOENT}, code: ExitFailed, hint: "no such pin"},
		{name: "not a pin", k: kOpen, err: client.ErrBadDescriptor, code: ExitFailed, hint: "not a bpfd pin"},
		{name: "quota", k: kCreate, err: client.ErrNoMemory, code: ExitFailed, hint: "quota"},
		{name: "pins disabled", k: kPin, err: client.ErrNotSupported, code: ExitFailed, hint: "--pin-root"},
		{name: "connection lost", k: kRead, err: client.ErrClosed, code: ExitUnreachable, hint: "connection to bpfd was lost"},
		{name: "verifier", k: kCreate, err: &client.VerifierError{Errno: unix.EACCES, Log: "0: exit\nR0 !read_ok"}, code: ExitFailed, hint: "verifier"},
		{name: "plain error", k: kOther, err: errors.New("boom"), code: ExitFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fail("op", tc.k, tc.elem, tc.err)
			var ce *cliError
			if !errors.As(err, &ce) {
				t.Fatalf("fail returned %T", err)
			}
			if ce.code != tc.code || !strings.Contains(ce.hint, tc.hint) {
				t.Errorf("code %d hint %q; want code %d, hint containing %q", ce.code, ce.hint, tc.code, tc.hint)
			}
			if e := errnoOf(tc.err); e != 0 && !strings.Contains(ce.msg, unix.ErrnoName(e)) {
				t.Errorf("message %q does not name %s", ce.msg, unix.ErrnoName(e))
			}
		})
	}
}

func TestParseMapFlagsAndPerm(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want uint32
		err  string
	}{
		{name: "names", in: "no_prealloc,rdonly", want: client.FlagNoPrealloc | client.FlagRdonly},
		{name: "number", in: "0x80", want: client.FlagRdonlyProg},
		{name: "mixed", in: "wronly, 1", want: client.FlagWronly | 1},
		{name: "empty", in: "", want: 0},
		{name: "unknown", in: "shiny", err: "unknown map flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMapFlags(tc.in)
			checkUsage(t, err, tc.err)
			if err == nil && got != tc.want {
				t.Errorf("got %#x, want %#x", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		in   string
		want os.FileMode
		err  string
	}{
		{name: "0640", in: "0640", want: 0o640},
		{name: "0o600", in: "0o600", want: 0o600},
		{name: "too big", in: "1777", err: "octal"},
		{name: "not octal", in: "0890", err: "octal"},
	} {
		t.Run("perm "+tc.name, func(t *testing.T) {
			got, err := parsePerm("mode", tc.in)
			checkUsage(t, err, tc.err)
			if err == nil && got != tc.want {
				t.Errorf("got %o, want %o", got, tc.want)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			var out, errb bytes.Buffer
			a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
			if code := a.Run([]string{"completion", shell}); code != 0 || !strings.Contains(out.String(), "bpfctl") {
				t.Fatalf("exit %d, %d bytes of script, stderr %q", code, out.Len(), errb.String())
			}
		})
	}
}
