// Package datafile parses the test files of the bpf_conformance suite
// (tests/*.data, negative/*.data): sections introduced by a line "-- NAME",
// '#' starting a comment anywhere.
//
// Sections understood:
//
//	-- asm     program text for bpfasm.Assemble (kept verbatim)
//	-- raw     the program as bytes: a line with a single token is one 64-bit
//	           instruction word (0x-prefixed hex or decimal, stored
//	           little-endian); a line with several tokens lists hex bytes
//	-- mem     input memory as hex bytes, any number per line
//	-- result  the expected r0: hex when it contains "0x", else decimal
//	           (a negative decimal is stored as its two's complement)
//	-- error   an expected failure; the text (possibly empty) is informative
//
// Any other section (the suite has "-- c" sources and a few stray headers)
// is kept verbatim in File.Other; deciding whether that is an error is the
// caller's business.
//
// The package has no state; Parse is safe for concurrent use.
package datafile

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// ErrFormat is wrapped by every error Parse returns (a malformed raw, mem or
// result section, or a repeated section). It matches unix.EINVAL.
var ErrFormat = errno.New(unix.EINVAL, "malformed conformance data file")

// File is one parsed .data file. It is plain data.
type File struct {
	Asm     string // text of the asm section, comments included, "" if absent
	HasAsm  bool   // an asm section is present (it may be empty)
	AsmLine int    // 1-based file line of the first asm line (add AsmLine-1 to an assembler line number)

	Raw []byte // bytes of the raw section; nil if absent

	Mem []byte // bytes of the mem section; nil if absent

	Result    uint64 // expected r0
	HasResult bool

	Error    string // text of the error section, comments removed, trimmed
	HasError bool

	// Other holds sections this package does not interpret, by name,
	// verbatim.
	Other map[string]string
}

// Parse parses the content of a .data file. It fails with an error wrapping
// ErrFormat that names the line at fault.
func Parse(b []byte) (*File, error) {
	f := &File{}
	lines := strings.Split(string(b), "\n")
	seen := map[string]bool{}
	section, start := "", 0
	flush := func(end int) error {
		if section == "" {
			return nil
		}
		return f.setSection(section, lines[start:end], start+1)
	}
	for i, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		lines[i] = line
		name, ok := strings.CutPrefix(line, "-- ")
		if !ok && line != "--" {
			continue
		}
		if err := flush(i); err != nil {
			return nil, err
		}
		section, start = strings.TrimSpace(name), i+1
		if seen[section] {
			return nil, fmt.Errorf("%w: line %d: section %q repeated", ErrFormat, i+1, section)
		}
		seen[section] = true
	}
	if err := flush(len(lines)); err != nil {
		return nil, err
	}
	return f, nil
}

func stripComment(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// setSection stores the body of one section; first is the 1-based file
// line number of body[0].
func (f *File) setSection(name string, body []string, first int) error {
	switch name {
	case "asm":
		f.Asm, f.HasAsm, f.AsmLine = strings.Join(body, "\n"), true, first
	case "raw":
		f.Raw = []byte{}
		for i, line := range body {
			toks := strings.Fields(stripComment(line))
			if len(toks) == 1 {
				v, err := strconv.ParseUint(toks[0], 0, 64)
				if err != nil {
					return fmt.Errorf("%w: line %d: raw instruction word %q: %v", ErrFormat, first+i, toks[0], err)
				}
				f.Raw = binary.LittleEndian.AppendUint64(f.Raw, v)
				continue
			}
			for _, t := range toks {
				v, err := parseByte(t)
				if err != nil {
					return fmt.Errorf("%w: line %d: raw byte %q: %v", ErrFormat, first+i, t, err)
				}
				f.Raw = append(f.Raw, v)
			}
		}
	case "mem":
		f.Mem = []byte{}
		for i, line := range body {
			for _, t := range strings.Fields(stripComment(line)) {
				v, err := parseByte(t)
				if err != nil {
					return fmt.Errorf("%w: line %d: mem byte %q: %v", ErrFormat, first+i, t, err)
				}
				f.Mem = append(f.Mem, v)
			}
		}
	case "result":
		var toks []string
		line := first
		for i, l := range body {
			if t := strings.Fields(stripComment(l)); len(t) > 0 {
				toks, line = append(toks, t...), first+i
			}
		}
		if len(toks) != 1 {
			return fmt.Errorf("%w: line %d: result section needs exactly one value, got %d", ErrFormat, line, len(toks))
		}
		v, err := parseResult(toks[0])
		if err != nil {
			return fmt.Errorf("%w: line %d: result %q: %v", ErrFormat, line, toks[0], err)
		}
		f.Result, f.HasResult = v, true
	case "error":
		var parts []string
		for _, l := range body {
			if s := stripComment(l); s != "" {
				parts = append(parts, s)
			}
		}
		f.Error, f.HasError = strings.Join(parts, "\n"), true
	default:
		if f.Other == nil {
			f.Other = map[string]string{}
		}
		f.Other[name] = strings.Join(body, "\n")
	}
	return nil
}

func parseByte(t string) (byte, error) {
	t = strings.TrimPrefix(strings.TrimPrefix(t, "0x"), "0X")
	if len(t) == 0 || len(t) > 2 {
		return 0, strconv.ErrSyntax
	}
	v, err := strconv.ParseUint(t, 16, 8)
	return byte(v), err
}

func parseResult(t string) (uint64, error) {
	if strings.Contains(strings.ToLower(t), "0x") {
		s := strings.TrimPrefix(strings.TrimPrefix(t, "0x"), "0X")
		return strconv.ParseUint(s, 16, 64)
	}
	if strings.HasPrefix(t, "-") {
		v, err := strconv.ParseInt(t, 10, 64)
		return uint64(v), err
	}
	return strconv.ParseUint(t, 10, 64)
}
