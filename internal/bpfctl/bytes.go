package bpfctl

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// elemArgs are the positional arguments of a map element command after
// the pin: "key BYTES... [value BYTES...] [exist|noexist|any]", as bpftool
// takes them. The byte words are kept unparsed until the map's sizes are
// known.
type elemArgs struct {
	key, value       []string
	hasKey, hasValue bool
	flag             uint64
	hasFlag          bool
}

// splitElemArgs splits args into the key words, the value words and the
// update flag keyword.
func splitElemArgs(args []string) (elemArgs, error) {
	var ea elemArgs
	var cur *[]string
	for i, w := range args {
		switch w {
		case "key":
			if ea.hasKey {
				return ea, usagef("key given twice")
			}
			ea.hasKey, cur = true, &ea.key
			ea.key = []string{}
			continue
		case "value":
			if ea.hasValue {
				return ea, usagef("value given twice")
			}
			ea.hasValue, cur = true, &ea.value
			ea.value = []string{}
			continue
		case "any", "exist", "noexist":
			if i != len(args)-1 {
				return ea, usagef("%q must come last", w)
			}
			ea.hasFlag = true
			ea.flag = map[string]uint64{"any": client.UpdateAny, "exist": client.UpdateExist, "noexist": client.UpdateNoExist}[w]
			continue
		}
		if cur == nil {
			return ea, usagef("unexpected %q: expected \"key\" followed by bytes", w)
		}
		*cur = append(*cur, w)
	}
	return ea, nil
}

// parseBytes parses words as bpftool does into exactly n bytes: each word
// is one byte written in C notation (0x1f hex, 017 octal, 31 decimal);
// with a leading "hex" word, every word is hex without prefix ("1f"),
// and a word of more than two digits stands for several bytes
// ("hex 01000000"). what names the argument in errors.
func parseBytes(what string, words []string, n int) ([]byte, error) {
	if len(words) == 0 {
		return nil, usagef("%s: no bytes given (%d expected)", what, n)
	}
	out := make([]byte, 0, n)
	if words[0] == "hex" {
		if len(words) == 1 {
			return nil, usagef("%s: no bytes after \"hex\" (%d expected)", what, n)
		}
		for _, w := range words[1:] {
			d := strings.TrimPrefix(strings.TrimPrefix(w, "0x"), "0X")
			if len(d) == 1 {
				d = "0" + d
			}
			b, err := hex.DecodeString(d)
			if err != nil || len(d) == 0 {
				return nil, usagef("%s: error parsing hex byte %q", what, w)
			}
			out = append(out, b...)
		}
	} else {
		for _, w := range words {
			v, err := strconv.ParseUint(w, 0, 8)
			if err != nil {
				if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
					return nil, usagef("%s: byte %q is out of range 0..255", what, w)
				}
				return nil, usagef("%s: error parsing byte %q (use 0x1f, 017, 31 or \"hex 1f\")", what, w)
			}
			out = append(out, byte(v))
		}
	}
	if len(out) != n {
		return nil, usagef("%s: expected %d bytes, got %d", what, n, len(out))
	}
	return out, nil
}

// typedFlags are the --key-uN or --value-uN shortcuts of one argument.
type typedFlags struct {
	what string          // "key" or "value"
	vals map[int]*string // by width in bits
	fs   *pflag.FlagSet  // where they were registered
}

// addTypedFlags registers --WHAT-u8, -u16, -u32 and -u64 on fs.
func addTypedFlags(fs *pflag.FlagSet, what string) *typedFlags {
	t := &typedFlags{what: what, vals: map[int]*string{}, fs: fs}
	for _, w := range []int{8, 16, 32, 64} {
		name := fmt.Sprintf("%s-u%d", what, w)
		t.vals[w] = fs.String(name, "", fmt.Sprintf("%s as a little-endian u%d (decimal or 0x hex); its size must be the map's %s size", what, w, what))
	}
	return t
}

// get returns the width and text of the one typed flag given, or 0.
func (t *typedFlags) get() (width int, text string, err error) {
	for _, w := range []int{8, 16, 32, 64} {
		if t.fs.Changed(fmt.Sprintf("%s-u%d", t.what, w)) {
			if width != 0 {
				return 0, "", usagef("--%s-u%d and --%s-u%d both given", t.what, width, t.what, w)
			}
			width, text = w, *t.vals[w]
		}
	}
	return width, text, nil
}

// typedBytes encodes text as a little-endian unsigned integer of width
// bits, which must be size bytes.
func typedBytes(what string, width int, text string, size int) ([]byte, error) {
	if width/8 != size {
		return nil, usagef("--%s-u%d gives %d bytes but the map's %s is %d bytes", what, width, width/8, what, size)
	}
	v, err := strconv.ParseUint(text, 0, width)
	if err != nil {
		return nil, usagef("--%s-u%d: %q is not an unsigned %d-bit number", what, width, text, width)
	}
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b[:size], nil
}

// resolveBytes returns the key or value of size bytes given either as
// words (has: the keyword was present) or by a typed flag. required says
// whether it must be given; nil, nil if it is optional and absent.
func resolveBytes(what string, words []string, has bool, t *typedFlags, size int, required bool) ([]byte, error) {
	width, text, err := t.get()
	if err != nil {
		return nil, err
	}
	switch {
	case has && width != 0:
		return nil, usagef("%s given both as bytes and with --%s-u%d", what, what, width)
	case width != 0:
		return typedBytes(what, width, text, size)
	case has:
		return parseBytes(what, words, size)
	case required:
		return nil, usagef("missing %s: give \"%s BYTES...\" or --%s-u%d", what, what, what, size*8)
	}
	return nil, nil
}

// hexBytes formats b as bpftool does: "01 00 ff".
func hexBytes(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(hex.EncodeToString([]byte{c}))
	}
	return sb.String()
}

// hexLines formats b as bpftool does for long keys and values: 16 bytes
// a line.
func hexLines(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		sb.WriteString(hexBytes(b[i:min(i+16, len(b))]))
		sb.WriteByte('\n')
	}
	return sb.String()
}

// jsonBytes is b as bpftool's JSON: ["0x01","0x00"].
func jsonBytes(b []byte) []string {
	if b == nil {
		return nil
	}
	out := make([]string, len(b))
	for i, c := range b {
		out[i] = fmt.Sprintf("0x%02x", c)
	}
	return out
}
