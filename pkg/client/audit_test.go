package client

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/demux"
)

// TestAuditLog: a verifier rejection and a seccomp deny are logged at
// info with the pid and comm of the process concerned and the program.
func TestAuditLog(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s := startServerWith(t, func(string) *demux.Config { return &demux.Config{Logger: zap.New(core)} })
	c := s.dial(t)

	// A program reading an uninitialised register: refused.
	_, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Name: "bad_prog", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R0, asm.R2), asm.Return()}})
	if err == nil {
		t.Fatal("the verifier accepted a read of r2")
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	e := waitLog(t, logs, "program refused by the verifier")
	if f := e.ContextMap(); fmt.Sprint(f["pid"]) != fmt.Sprint(os.Getpid()) || f["comm"] != strings.TrimSpace(string(comm)) || f["prog"] != "bad_prog" {
		t.Fatalf("verifier rejection logged with %v (pid %d, comm %q)", f, os.Getpid(), comm)
	}

	// A seccomp program denying getppid to a child.
	coll, err := c.LoadCollection(fixture("seccomp_policy"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	if err := coll.Maps["denied"].Update(uint32(unix.SYS_GETPPID), uint32(unix.EACCES), UpdateAny); err != nil {
		t.Fatal(err)
	}
	cmd := sameUserChild(t, "sockprobe", nil)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	run, err := coll.Programs["policy"].StartSeccomp(cmd, &SeccompOptions{Syscalls: []string{"getppid"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	e = waitLog(t, logs, "seccomp deny")
	f := e.ContextMap()
	if fmt.Sprint(f["pid"]) != fmt.Sprint(run.Process.Pid) {
		t.Fatalf("deny logged for pid %v, the child is %d: %v", f["pid"], run.Process.Pid, f)
	}
	if f["prog"] != "policy" || f["syscall"] != "getppid" || f["errno"] != "EACCES" || f["comm"] == "" {
		t.Fatalf("deny logged with %v", f)
	}
}

// waitLog waits for an info entry with message msg.
func waitLog(t *testing.T, logs *observer.ObservedLogs, msg string) observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range logs.FilterMessage(msg).All() {
			if e.Level != zapcore.InfoLevel {
				t.Fatalf("%q logged at %v, want info", msg, e.Level)
			}
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log: %v", msg, logs.All())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
