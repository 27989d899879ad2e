package bpfctl

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// TestRunDataOut: --data-out and --ctx-out write the packet and context
// after the run to files (or raw to stdout with "-").
func TestRunDataOut(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "prog", "load", "../../testdata/bpf/xdp_ports.bpf.o", "--pin-dir", "x")
	in, _ := hex.DecodeString(strings.ReplaceAll(udpFrame, " ", ""))
	pkt := filepath.Join(d.dir, "in.bin")
	if err := os.WriteFile(pkt, in, 0o644); err != nil {
		t.Fatal(err)
	}
	out, ctx := filepath.Join(d.dir, "out.bin"), filepath.Join(d.dir, "ctx.bin")
	r := d.mustRun(t, "prog", "run", "x/xdp_ports", "--data", pkt, "--data-out", out, "--ctx-out", ctx)
	if !strings.Contains(r.stdout, "XDP_DROP") || !strings.Contains(r.stdout, "data out: 42 bytes written to "+out) {
		t.Fatalf("stdout %q", r.stdout)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, in) {
		t.Fatalf("data out file: %x %v, want %x", got, err, in)
	}
	if got, err := os.ReadFile(ctx); err != nil || len(got) != 24 {
		t.Fatalf("ctx out file: %x %v, want a 24-byte struct xdp_md", got, err)
	}
	r = d.mustRun(t, "prog", "run", "x/xdp_ports", "--data", pkt, "--data-out", "-")
	if r.stdout != string(in) {
		t.Fatalf("--data-out -: %x, want %x", r.stdout, in)
	}
	r = d.run(t, "prog", "run", "x/xdp_ports", "--data", pkt, "--data-out", filepath.Join(d.dir, "nodir", "x"))
	if r.code != ExitFailed || !strings.Contains(r.stderr, "no such file") {
		t.Fatalf("unwritable --data-out: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRetvalName(t *testing.T) {
	tests := []struct {
		name string
		typ  client.ProgramType
		ret  uint32
		want string
	}{
		{name: "xdp pass", typ: client.XDP, ret: 2, want: "XDP_PASS"},
		{name: "xdp redirect", typ: client.XDP, ret: 4, want: "XDP_REDIRECT"},
		{name: "xdp unknown", typ: client.XDP, ret: 9, want: "unknown XDP action (the kernel treats it as XDP_ABORTED)"},
		{name: "seccomp allow", typ: client.Seccomp, ret: 0x7fff0000, want: "SECCOMP_RET_ALLOW"},
		{name: "seccomp errno", typ: client.Seccomp, ret: 0x00050000 | 13, want: "SECCOMP_RET_ERRNO(EACCES)"},
		{name: "seccomp kill process", typ: client.Seccomp, ret: 0x80000000, want: "SECCOMP_RET_KILL_PROCESS"},
		{name: "seccomp kill thread", typ: client.Seccomp, ret: 0, want: "SECCOMP_RET_KILL_THREAD"},
		{name: "seccomp log", typ: client.Seccomp, ret: 0x7ffc0000, want: "SECCOMP_RET_LOG"},
		{name: "seccomp trap data", typ: client.Seccomp, ret: 0x00030007, want: "SECCOMP_RET_TRAP(7)"},
		{name: "seccomp unknown", typ: client.Seccomp, ret: 0x00010000, want: "unknown seccomp action 0x10000 (the kernel kills the process)"},
		{name: "socket drop", typ: client.SocketFilter, ret: 0, want: "drop"},
		{name: "socket keep", typ: client.SocketFilter, ret: 64, want: "keep 64 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := retvalName(tc.typ, tc.ret); got != tc.want {
				t.Errorf("retvalName(%v, %#x) = %q, want %q", tc.typ, tc.ret, got, tc.want)
			}
		})
	}
}
