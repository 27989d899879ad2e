package verifier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// kernelAvailable skips t unless bpf(2) can create a map.
func kernelAvailable(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel cross-check needs root for bpf(2)")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Skipf("bpf(2) unavailable: %v", err)
	}
	m.Close()
}

// kernelLoad loads raw into the kernel as typ, creating env's maps there
// (a read-only handle becomes BPF_F_RDONLY_PROG, a write-only one
// BPF_F_WRONLY_PROG) and patching LD_IMM64 map indexes into their fds.
// It returns the kernel's verdict.
func kernelLoad(t *testing.T, raw []byte, env *Env, typ ebpf.ProgramType) error {
	t.Helper()
	return kernelLoadLog(t, raw, env, typ, true)
}

// kernelLoadLog is kernelLoad, with the kernel's verifier log on failure
// when withLog (cilium/ebpf then verifies a rejected program again with
// a log: slow for programs that exhaust the instruction budget).
func kernelLoadLog(t *testing.T, raw []byte, env *Env, typ ebpf.ProgramType, withLog bool) error {
	t.Helper()
	var fds []int
	for _, mi := range env.Maps {
		flags := mi.Flags
		if !mi.Write {
			flags |= unix.BPF_F_RDONLY_PROG
		}
		if !mi.Read {
			flags |= unix.BPF_F_WRONLY_PROG
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(mi.Type), KeySize: mi.KeySize, ValueSize: mi.ValueSize,
			MaxEntries: mi.MaxEntries, Flags: flags})
		if err != nil {
			t.Fatalf("kernel map %s: %v", mi.Name, err)
		}
		t.Cleanup(func() { m.Close() })
		fds = append(fds, m.FD())
	}
	raw = append([]byte(nil), raw...)
	for i := 0; i+8 <= len(raw); i += 8 {
		if raw[i] == 0x18 && (raw[i+1]>>4 == pseudoMapFD || raw[i+1]>>4 == pseudoMapValue) {
			idx := int(binary.LittleEndian.Uint32(raw[i+4:]))
			if idx < len(fds) {
				binary.LittleEndian.PutUint32(raw[i+4:], uint32(fds[idx]))
			}
			i += 8
		}
	}
	insns, err := asm.AppendInstructions(nil, bytes.NewReader(raw), binary.LittleEndian, "linux")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: typ, Instructions: insns, License: "GPL"},
		ebpf.ProgramOptions{LogDisabled: !withLog})
	if err == nil {
		p.Close()
	}
	return err
}

// TestKernelAgrees loads every table program meaningful to the kernel and
// checks that the kernel accepts exactly what Verify accepts.
func TestKernelAgrees(t *testing.T) {
	kernelAvailable(t)
	for _, tc := range cases() {
		if tc.progType == ebpf.UnspecifiedProgram {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if tc.kernelDev != "" {
				t.Skip("deliberate deviation: " + tc.kernelDev)
			}
			raw := tc.bytes(t)
			kerr := kernelLoadLog(t, raw, tc.env, tc.progType, false)
			_, err := Verify(raw, tc.env)
			switch {
			case kerr == nil && err != nil:
				t.Fatalf("kernel accepts, bpfd rejects: %v\n%s", err, err.(*Error).Log)
			case kerr != nil && err == nil:
				t.Fatalf("bpfd accepts, kernel rejects: %+v", kerr)
			case kerr != nil:
				var ke unix.Errno
				if errors.As(kerr, &ke) && !errors.Is(err, ke) {
					t.Errorf("errno differs: kernel %v, bpfd %v\n%v", ke, err.(*Error).Errno, kerr)
				}
			}
		})
	}
}
