package bpfemu

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
	"github.com/bpfd-project/bpfd/pkg/bpfemu/internal/emutest"
	"github.com/bpfd-project/bpfd/pkg/nfqueue"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// loadRaw loads insns as prog type typ through the emulated bpf(2).
func (h *harness) loadRaw(t *testing.T, typ uint32, insns []byte) int {
	t.Helper()
	a := make([]byte, plEnd)
	ins := append([]byte(nil), insns...)
	lic := []byte("GPL\x00")
	put32(a, plProgType, typ)
	put32(a, plInsnCnt, uint32(len(ins)/8))
	put64(a, plInsns, addr(ins))
	put64(a, plLicense, addr(lic))
	fd, e := h.bpf(cmdProgLoad, a, plEnd)
	if e != 0 {
		t.Fatalf("load type %#x: %v", typ, e)
	}
	return fd
}

// TestLinkCreate attaches an XDP program to a netfilter queue through the
// emulated BPF_LINK_CREATE (bpfd's attach type; the queue's socket bound
// by the task, with its own CAP_NET_ADMIN), then inspects and detaches the
// link through bpf(2) as a link fd.
func TestLinkCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: binds a netfilter queue in a private network namespace")
	}
	ns := netnstest.New(t, "emu")
	h := newHarness(t)
	defer h.closeInstalled()
	prog := h.loadRaw(t, 6, insXDP)
	sock, err := nfqueue.Bind(7, &nfqueue.BindConfig{NetNS: ns.FD()})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)

	a := make([]byte, lcEnd)
	put32(a, lcProgFD, uint32(prog))
	put32(a, lcTargetFD, uint32(sock))
	put32(a, lcAttachType, 2) // BPF_CGROUP_INET_INGRESS: no such attach point here
	if _, e := h.bpf(cmdLinkCreate, a, lcEnd); e != unix.EINVAL {
		t.Fatalf("a kernel attach type: %v, want EINVAL", e)
	}
	put32(a, lcAttachType, wire.AttachNFQueue)
	put32(a, lcQueueFirst, 7)
	link, e := h.bpf(cmdLinkCreate, a, lcEnd)
	if e != 0 {
		t.Fatalf("link create: %v", e)
	}
	var buf [64]byte
	p := []byte("/proc/self/fd/" + itoa(uint64(link)) + "\x00")
	n, e := h.syscall(unix.SYS_READLINK, addr(p), uint64(uintptr(unsafePointer(&buf[0]))), 64)
	if e != 0 || string(buf[:n]) != "anon_inode:bpf_link" {
		t.Errorf("readlink of the link fd: %q %v", buf[:max(n, 0)], e)
	}
	info := make([]byte, linkInfoLen)
	ia := make([]byte, inEnd)
	put32(ia, inBPFFD, uint32(link))
	put32(ia, inInfoLen, linkInfoLen)
	put64(ia, inInfo, addr(info))
	if _, e := h.bpf(cmdObjGetInfoByFD, ia, inEnd); e != 0 {
		t.Fatalf("link info: %v", e)
	}
	pinfo := make([]byte, progInfoSize)
	put32(ia, inBPFFD, uint32(prog))
	put32(ia, inInfoLen, progInfoSize)
	put64(ia, inInfo, addr(pinfo))
	if _, e := h.bpf(cmdObjGetInfoByFD, ia, inEnd); e != 0 {
		t.Fatalf("prog info: %v", e)
	}
	if get32(info, liType) != wire.AttachNFQueue || get32(info, liID) == 0 || get32(info, liProgID) != get32(pinfo, piID) {
		t.Errorf("link info: type %#x id %d prog %d (the program is %d)", get32(info, liType), get32(info, liID),
			get32(info, liProgID), get32(pinfo, piID))
	}
	d := make([]byte, ldEnd)
	put32(d, ldLinkFD, uint32(link))
	if _, e := h.bpf(cmdLinkDetach, d, ldEnd); e != 0 {
		t.Fatalf("detach: %v", e)
	}
	put32(d, ldLinkFD, uint32(prog))
	if _, e := h.bpf(cmdLinkDetach, d, ldEnd); e != unix.EINVAL {
		t.Fatalf("detach of a program fd: %v, want EINVAL", e)
	}
}

// TestSeccompAttach attaches a Seccomp program to a child's seccomp
// listener through the emulated BPF_PROG_ATTACH: the program then decides
// the child's routed syscalls.
func TestSeccompAttach(t *testing.T) {
	emutest.RequireNotify(t)
	if testing.Short() {
		t.Skip("starts a filtered child")
	}
	h := newHarness(t)
	defer h.closeInstalled()
	// r0 = SECCOMP_RET_ERRNO | EACCES
	deny := []byte{0xb7, 0, 0, 0, 13, 0, 0x05, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}
	sp := h.loadRaw(t, uint32(prog.Seccomp), deny)
	dir := t.TempDir()
	target := exec.Command("/bin/sh", "-c", "mkdir "+dir+"/x 2>&1; echo done")
	var out bytes.Buffer
	target.Stdout, target.Stderr = &out, &out
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	nrs, err := seccomp.ParseSyscalls("mkdir,mkdirat")
	if err != nil {
		t.Fatal(err)
	}
	proc, listener, err := seccomp.StartFiltered(target, &seccomp.ExecConfig{Syscalls: nrs, Shim: []string{self}})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(listener)
	a := make([]byte, paEnd)
	put32(a, paTargetFD, uint32(listener))
	put32(a, paAttachBPFFD, uint32(sp))
	put32(a, paAttachType, 1) // BPF_CGROUP_INET_EGRESS
	if _, e := h.bpf(cmdProgAttach, a, paEnd); e != unix.EINVAL {
		t.Errorf("a kernel attach type: %v, want EINVAL", e)
	}
	put32(a, paAttachType, wire.AttachSeccomp)
	if _, e := h.bpf(cmdProgAttach, a, paEnd); e != 0 {
		proc.Cmd.Process.Kill()
		proc.Cmd.Wait()
		t.Fatalf("attach: %v", e)
	}
	if err := proc.Release(); err != nil {
		t.Fatal(err)
	}
	proc.Cmd.Wait()
	if !strings.Contains(out.String(), "Permission denied") || !strings.Contains(out.String(), "done") {
		t.Errorf("the child's mkdir was not denied by the attached program:\n%s", out.String())
	}
	if _, err := os.Stat(dir + "/x"); err == nil {
		t.Error("the directory was made")
	}
}
