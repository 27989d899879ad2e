package bpfemu_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/bpfemu"
	"github.com/bpfd-project/bpfd/pkg/bpfemu/internal/emutest"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// env is what the end-to-end tests share: an in-process bpfd, a world
// readable directory holding a copy of the test binary (which plays
// bpfctl), the test programs and the fixture object.
type env struct {
	d    *emutest.Daemon
	dir  string
	self string
	obj  string
}

// newEnv skips unless the tests run as root (they run tools as nobody
// and use the kernel as the oracle) on a kernel with seccomp user
// notification and descriptor installation.
func newEnv(t testing.TB) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the tools run as uid 65534 under bpfctl exec --bpf, and as root against the kernel oracle")
	}
	emutest.RequireNotify(t)
	if testing.Short() {
		t.Skip("end-to-end: starts processes under seccomp (skipped with -short)")
	}
	// The fixture is found relative to the package directory.
	if _, err := os.Stat("testdata/emu.bpf.o"); err != nil {
		t.Fatal(err)
	}
	e := &env{d: emutest.StartDaemon(t), dir: emutest.WorldDir(t)}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.self = emutest.CopyExecutable(t, self, e.dir)
	e.obj = emutest.CopyExecutable(t, "testdata/emu.bpf.o", e.dir)
	return e
}

// shared holds what every test uses and is built once per run: the
// cilium/ebpf test program, in a directory every user may read, removed
// by TestMain.
var shared struct {
	once      sync.Once
	dir       string
	ciliumErr error
	cilium    string
}

// ciliumprog returns the static cilium/ebpf test program, built once.
func (e *env) ciliumprog(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "bpfemu-test-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			shared.ciliumErr = err
			return
		}
		shared.dir = dir
		shared.cilium, shared.ciliumErr = emutest.GoBuildErr(dir, "./pkg/bpfemu/internal/ciliumprog", "ciliumprog")
	})
	if shared.ciliumErr != nil {
		t.Fatal(shared.ciliumErr)
	}
	return shared.cilium
}

type result struct {
	out, errOut string
	code        int
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.errOut
}

func runCmd(t testing.TB, cmd *exec.Cmd, timeout time.Duration) result {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s: still running after %v\nstdout: %s\nstderr: %s", cmd.Args, timeout, out.String(), errOut.String())
	}
	code := 0
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		code = xe.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errOut.String(), code}
}

// emulatedCmd is argv under `bpfctl exec --bpf` as uid 65534.
func (e *env) emulatedCmd(argv ...string) *exec.Cmd { return e.emulatedCmdFlags(nil, argv...) }

// emulatedCmdFlags is argv under `bpfctl exec --bpf FLAGS` as uid 65534.
func (e *env) emulatedCmdFlags(flags []string, argv ...string) *exec.Cmd {
	args := append([]string{"--socket", e.d.Socket, "exec", "--bpf"}, flags...)
	cmd := exec.Command(e.self, append(append(args, "--"), argv...)...)
	cmd.Env = append(os.Environ(), roleEnv+"=bpfctl", "HOME="+e.dir)
	cmd.Dir = e.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: emutest.Nobody, Gid: emutest.Nobody}}
	return cmd
}

func (e *env) emulated(t testing.TB, argv ...string) result {
	t.Helper()
	return runCmd(t, e.emulatedCmd(argv...), 2*time.Minute)
}

// kernel is argv as root against the kernel, with a fresh bpf file system
// on /sys/fs/bpf in a mount namespace of its own.
func (e *env) kernel(t *testing.T, argv ...string) result {
	t.Helper()
	cmd := exec.Command(e.self, argv...)
	cmd.Env = append(os.Environ(), roleEnv+"=bpffs", "HOME="+e.dir)
	cmd.Dir = e.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	return runCmd(t, cmd, 2*time.Minute)
}

// compareRuns fails unless both runs exited 0 with the same output.
func compareRuns(t *testing.T, k, em result, normalize func(string) string) {
	t.Helper()
	if k.code != 0 {
		t.Fatalf("kernel run failed: %v", k)
	}
	if em.code != 0 {
		t.Fatalf("emulated run failed: %v", em)
	}
	ko, eo := k.out, em.out
	if normalize != nil {
		ko, eo = normalize(ko), normalize(eo)
	}
	if ko == eo {
		return
	}
	kl, el := strings.Split(ko, "\n"), strings.Split(eo, "\n")
	for i := 0; i < max(len(kl), len(el)); i++ {
		var a, b string
		if i < len(kl) {
			a = kl[i]
		}
		if i < len(el) {
			b = el[i]
		}
		if a != b {
			t.Errorf("line %d:\nkernel: %s\nbpfd:   %s", i+1, a, b)
		}
	}
	t.Logf("emulated stderr:\n%s", em.errOut)
}

// settled fails unless the daemon gets back to holding nothing.
func (e *env) settled(t *testing.T) {
	t.Helper()
	if st, ok := e.d.Settle(10 * time.Second); !ok {
		t.Errorf("the daemon still holds objects=%d descriptors=%d connections=%d", st.Objects, st.Descriptors, st.Connections)
	}
}

// TestCiliumProgram runs a Go program that uses only cilium/ebpf (maps,
// programs from instructions and from a clang object, test runs,
// iteration, batches, freeze, pins) against the kernel as root and under
// bpfctl exec --bpf as nobody: the outputs are equal.
func TestCiliumProgram(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	k := e.kernel(t, prog, "-obj", e.obj, "-pin", "/sys/fs/bpf")
	em := e.emulated(t, prog, "-obj", e.obj, "-pin", "/sys/fs/bpf")
	compareRuns(t, k, em, nil)
	if !strings.Contains(em.out, "through the pin:") || !strings.Contains(em.out, "xdp_filter: ok 2") {
		t.Errorf("transcript lacks the pin and program steps:\n%s", em.out)
	}
	e.settled(t)
}

// TestLibbpfProgram does the same with a C program against Debian's
// libbpf (bpf_object__open/load, bpf_prog_test_run_opts, batches, pins).
func TestLibbpfProgram(t *testing.T) {
	e := newEnv(t)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("needs gcc (.ci/run installs it)")
	}
	if _, err := os.Stat("/usr/include/bpf/libbpf.h"); err != nil {
		t.Skip("needs libbpf-dev (.ci/run installs it)")
	}
	bin := filepath.Join(e.dir, "libbpfprog")
	if out, err := exec.Command(gcc, "-O2", "-Wall", "-o", bin, "testdata/libbpfprog.c", "-lbpf").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	k := e.kernel(t, bin, e.obj, "/sys/fs/bpf")
	em := e.emulated(t, bin, e.obj, "/sys/fs/bpf")
	compareRuns(t, k, em, nil)
	if !strings.Contains(em.out, "get pinned program: ok") {
		t.Errorf("transcript lacks the pinned program:\n%s", em.out)
	}
	e.settled(t)
}

// bpftoolScript runs bpftool commands in one shell, so that the kernel
// run keeps its pins from one command to the next as the emulated run
// does.
const bpftoolScript = `
run() { echo "\$ $*"; "$@" 2>&1; echo "rc=$?"; }
P=/sys/fs/bpf
run bpftool map create $P/counts type hash key 4 value 8 entries 64 name counts
run bpftool map update pinned $P/counts key 1 0 0 0 value 42 0 0 0 0 0 0 0
run bpftool map update pinned $P/counts key 2 0 0 0 value 7 0 0 0 0 0 0 0
run bpftool map update pinned $P/counts key 2 0 0 0 value 8 0 0 0 0 0 0 0 noexist
run bpftool map lookup pinned $P/counts key 1 0 0 0
run bpftool map lookup pinned $P/counts key 9 0 0 0
run bpftool map dump pinned $P/counts
run bpftool -j map lookup pinned $P/counts key 2 0 0 0
run bpftool map delete pinned $P/counts key 1 0 0 0
run bpftool map delete pinned $P/counts key 1 0 0 0
run bpftool map dump pinned $P/counts
run bpftool map show pinned $P/counts
run bpftool -j map show pinned $P/counts
run bpftool -f map show pinned $P/counts
run bpftool map create $P/arr type array key 4 value 4 entries 2 name arr
run bpftool map update pinned $P/arr key 5 0 0 0 value 1 0 0 0
run bpftool map freeze pinned $P/arr
run bpftool map update pinned $P/arr key 1 0 0 0 value 1 0 0 0
run bpftool map dump pinned $P/arr
run bpftool map getnext pinned $P/arr key 0 0 0 0
run bpftool map getnext pinned $P/arr key 1 0 0 0
run bpftool prog load OBJ $P/prog
run bpftool prog show pinned $P/prog
run bpftool prog run pinned $P/prog data_in PKT data_out PKTOUT repeat 3
run cmp PKT PKTOUT
run bpftool prog loadall OBJ $P/all
run ls $P/all
run bpftool prog dump xlated pinned $P/all/seven
run bpftool prog run pinned $P/all/seven data_in PKT
run bpftool prog loadall OBJ $P/typed pinmaps $P/typedmaps
run ls $P/typedmaps
run bpftool map dump pinned $P/typedmaps/verdicts
run bpftool -j map dump pinned $P/typedmaps/emu_bss
run bpftool map update pinned $P/typedmaps/verdicts key 1 0 0 0 value 9 0 0 0 0 0 0 0
run bpftool map lookup pinned $P/typedmaps/verdicts key 1 0 0 0
run bpftool prog dump xlated pinned $P/typed/seven
run rm -r $P/typed $P/typedmaps
run ls $P
run rm $P/counts
run bpftool map show pinned $P/counts
run bpftool --nomount map create /tmp/not-bpffs type hash key 4 value 8 entries 4 name x
`

// normalizeBpftool removes what legitimately differs between a kernel and
// bpfd (docs/emulation.md): ids, load times, owners, memory accounting,
// the JIT, program tags (SHA-256 since Linux 6.18, SHA-1 before and in
// bpfd), BTF (source annotations of dumps, btf_id), the preload iterators
// the kernel puts in every bpffs (maps.debug, progs.debug), the processes
// bpftool finds holding objects (it needs kernel iterators), and the
// order of hash map elements.
func normalizeBpftool(s string) string {
	res := []struct{ re, to string }{
		{`(?m)^\d+: `, "ID: "},
		{`"id":\d+`, `"id":ID`},
		{`map_ids [\d,]+`, "map_ids IDS"},
		{`"bytes_memlock":\d+`, `"bytes_memlock":M`},
		{`memlock \d+B`, "memlock MB"},
		{`(?m)^\s*loaded_at .*$`, "\tLOADED"},
		{`(?m)^\s*(pids|btf_id) .*\n`, ""},
		{`,"pids":\[[^\]]*\]`, ""},
		{`  (jited \d+B|not jited)`, "  JIT"},
		{`xlated \d+B`, "xlated XB"},
		{`duration( \(average\))?: \d+ns`, "duration: Nns"},
		{`/tmp/pktout\.\d+`, "/tmp/pktout.PID"},
		{`(?m)^\s*frozen$`, ""},
		{`tag [0-9a-f]{16}`, "tag TAG"},
		{`(?m)^(int|void|long|unsigned) .*\(.*\):\n`, ""},
		{`(?m)^; .*\n`, ""},
		{`(?m)^(maps|progs)\.debug\n`, ""},
	}
	for _, r := range res {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.to)
	}
	// Hash elements come in bucket order: sort each run of "key:" lines.
	lines := strings.Split(s, "\n")
	for i := 0; i < len(lines); {
		j := i
		for j < len(lines) && strings.HasPrefix(lines[j], "key:") {
			j++
		}
		slices.Sort(lines[i:j])
		i = max(j, i+1)
	}
	return strings.Join(lines, "\n")
}

// TestBpftool runs Debian's bpftool on maps, programs and pins against
// the kernel as root and under bpfctl exec --bpf as nobody, and compares
// the outputs once ids, times, owners, memory figures and the JIT are
// taken out.
func TestBpftool(t *testing.T) {
	e := newEnv(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Skip("needs Debian's bpftool (.ci/run installs it)")
	}
	pkt := make([]byte, 60)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	pkt[12], pkt[13] = 0x08, 0x00
	pkt[14] = 0x45
	if err := os.WriteFile(filepath.Join(e.dir, "pkt"), pkt, 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("OBJ", e.obj, "PKTOUT", "/tmp/pktout.$$", "PKT", filepath.Join(e.dir, "pkt")).Replace(bpftoolScript)
	k := e.kernel(t, "/bin/sh", "-c", script)
	em := e.emulated(t, "/bin/sh", "-c", script)
	compareRuns(t, k, em, normalizeBpftool)
	for _, want := range []string{"Found 1 element", "pinned /sys/fs/bpf/counts", "Return value: 46", "r0 = 7",
		`"value": 9`, `"key": 3,`} { // the last two typed by the BTF of the object's maps
		if !strings.Contains(em.out, want) {
			t.Errorf("emulated bpftool output lacks %q:\n%s", want, em.out)
		}
	}
	// The pins the script left behind are the user's bpfd pins: bpfctl
	// pin ls (as the same user, outside the emulation) lists them.
	ls := exec.Command(e.self, "--socket", e.d.Socket, "pin", "ls")
	ls.Env = append(os.Environ(), roleEnv+"=bpfctl", "HOME="+e.dir)
	ls.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: emutest.Nobody, Gid: emutest.Nobody}}
	r := runCmd(t, ls, time.Minute)
	for _, re := range []string{
		`(?m)^arr +map +\d+ +arr +rwd +0600 +nobody:\S+ +array key 4B value 4B max_entries 2$`,
		`(?m)^prog +prog +\d+ +count_proto +rwd +0600 +nobody:`,
		`(?m)^all +dir `,
		`(?m)^all/seven +prog +\d+ +seven `,
	} {
		if !regexp.MustCompile(re).MatchString(r.out) {
			t.Errorf("bpfctl pin ls lacks a line matching %s:\n%v", re, r)
		}
	}
	if strings.Contains(r.out, "counts") {
		t.Errorf("bpfctl pin ls lists the pin the script removed:\n%s", r.out)
	}
	// Pins the script left behind are the user's: remove them and the
	// daemon lets go of everything.
	os.RemoveAll(filepath.Join(e.d.PinRoot, "all"))
	os.Remove(filepath.Join(e.d.PinRoot, "prog"))
	os.Remove(filepath.Join(e.d.PinRoot, "arr"))
	e.settled(t)
}

// TestDescriptorPassing passes map descriptors between a pkg/client
// process (this test, as root) and a cilium/ebpf program under bpfctl exec
// --bpf (as nobody), both ways, over SCM_RIGHTS: a descriptor is the same
// object with the same access whichever side made it.
func TestDescriptorPassing(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	c, err := client.Dial(e.d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Update(le32(1), le64(41), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	ro, err := m.Reopen(client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()

	for _, tc := range []struct {
		name   string
		give   *client.Map
		update string
	}{
		{name: "read-write", give: m, update: "update through the received descriptor: ok"},
		{name: "read-only", give: ro, update: "update through the received descriptor: errno 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(e.dir, "pass-"+tc.name)
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			os.Chmod(sock, 0o666)
			cmd := e.emulatedCmd(prog, "-passfd", sock)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			ln.SetDeadline(time.Now().Add(time.Minute))
			conn, err := ln.AcceptUnix()
			if err != nil {
				cmd.Process.Kill()
				t.Fatalf("accept: %v\n%s", err, errOut.String())
			}
			defer conn.Close()
			if err := client.SendDescriptors(conn, tc.give.FD()); err != nil {
				t.Fatal(err)
			}
			fds, err := client.ReceiveDescriptors(conn, 1)
			if err != nil {
				t.Fatalf("receive: %v\n%s", err, errOut.String())
			}
			theirs, err := c.ImportMap(fds[0])
			unix.Close(fds[0])
			if err != nil {
				t.Fatalf("import the emulated process's map: %v", err)
			}
			v := make([]byte, 8)
			if err := theirs.Lookup(le32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 99 {
				t.Errorf("lookup in the emulated process's map: %v %x, want 99", err, v)
			}
			if info, err := theirs.Info(); err != nil || info.Name != "passfd" || info.OwnerUID != emutest.Nobody {
				t.Errorf("its info: %+v %v, want name passfd owned by %d", info, err, emutest.Nobody)
			}
			theirs.Close()
			conn.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v\nstdout: %s\nstderr: %s", err, out.String(), errOut.String())
			}
			if want := "lookup through the received descriptor: ok 41\n" + tc.update + "\n"; out.String() != want {
				t.Errorf("emulated side printed\n%s\nwant\n%s", out.String(), want)
			}
		})
	}
	v := make([]byte, 8)
	if err := m.Lookup(le32(2), v); err != nil || binary.LittleEndian.Uint64(v) != 42 {
		t.Errorf("the emulated process's update through the passed descriptor: %v %x, want 42", err, v)
	}
	ro.Close()
	m.Close()
	c.Close()
	e.settled(t)
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// TestClosedObjectsAreFreed: a process that creates and closes maps does
// not leave them in the daemon while it runs on, as the kernel frees a map
// at the close of its last fd (the supervisor lets go of its copies within
// a collection period).
func TestClosedObjectsAreFreed(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	cmd := e.emulatedCmd(prog, "-churn", "50")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line := make([]byte, 5)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "done\n" {
		t.Fatalf("churn: %q %v", line, err)
	}
	deadline := time.Now().Add(3 * bpfemu.CollectInterval)
	for e.d.Srv.Stats().Objects != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d objects still held while the process runs, after it closed them all", e.d.Srv.Stats().Objects)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	e.settled(t)
}

// TestProcessDiesMidCall kills processes in the middle of their bpf(2)
// calls, the traced program and the supervisor itself: nothing stays in
// the daemon once they are gone.
func TestProcessDiesMidCall(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	for _, victim := range []string{"program", "supervisor"} {
		t.Run(victim, func(t *testing.T) {
			cmd := e.emulatedCmd(prog, "-loop")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var pid int
			if _, err := fmt.Fscanf(stdout, "pid %d\n", &pid); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no pid: %v\n%s", err, errOut.String())
			}
			time.Sleep(300 * time.Millisecond) // well into the loop
			if st := e.d.Srv.Stats(); st.Objects == 0 {
				t.Errorf("the loop made no objects: %+v\n%s", st, errOut.String())
			}
			if victim == "program" {
				unix.Kill(pid, unix.SIGKILL)
			} else {
				cmd.Process.Kill() // the program's next bpf(2) fails (ENOSYS) and it exits
			}
			cmd.Wait()
			deadline := time.Now().Add(10 * time.Second)
			for unix.Kill(pid, 0) == nil && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			e.settled(t)
		})
	}
}

// TestGarbageCalls makes thousands of bpf(2) calls with random commands,
// attrs, pointers (NULL, unmapped, misaligned, at the edge of readable
// memory) and sizes from a traced process: every one is answered, the
// supervisor survives and still answers, nothing leaks.
func TestGarbageCalls(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	r := e.emulated(t, prog, "-garbage", "3000", "-seed", "7")
	if r.code != 0 || !strings.Contains(r.out, "still answering") {
		t.Fatalf("%v", r)
	}
	for _, want := range []string{"errno 14:", "errno 22:", "errno 7:"} { // EFAULT, EINVAL, E2BIG
		if !strings.Contains(r.out, want) {
			t.Errorf("no call failed with %s in\n%s", want, r.out)
		}
	}
	e.settled(t)
}

// TestBpftoolLists: bpftool's listings (map show, prog show with no
// argument: GET_NEXT_ID, GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, fdinfo) show
// the user's pinned objects under emulation, with their pins (-f).
func TestBpftoolLists(t *testing.T) {
	e := newEnv(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Skip("needs Debian's bpftool (.ci/run installs it)")
	}
	script := strings.NewReplacer("OBJ", e.obj).Replace(`
bpftool map create /sys/fs/bpf/listed type array key 4 value 8 entries 2 name listed || exit 1
bpftool prog load OBJ /sys/fs/bpf/listed_prog || exit 1
bpftool -f map show
bpftool -f prog show
bpftool -j map show
`)
	r := e.emulated(t, "/bin/sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	for _, want := range []string{"array  name listed", "pinned /sys/fs/bpf/listed", "socket_filter  name count_proto",
		"pinned /sys/fs/bpf/listed_prog", `"name":"listed"`} {
		if !strings.Contains(r.out, want) {
			t.Errorf("listing lacks %q:\n%s\n%s", want, r.out, r.errOut)
		}
	}
	os.Remove(filepath.Join(e.d.PinRoot, "listed"))
	os.Remove(filepath.Join(e.d.PinRoot, "listed_prog"))
	e.settled(t)
}

// TestHandedInDescriptors: `bpfctl exec --bpf --map ports:r --map
// hits:rw` hands bpfd descriptors in as fds 3 and 4, and a cilium/ebpf
// program that knows nothing of bpfd uses them as the inherited kernel
// map fds they stand for (info, lookup, update, programs reading and
// writing the map, a dup). The same program run as root with kernel
// maps, a read-only and a read-write fd, prints the same, but for the
// one documented difference: the kernel lets a read-only fd load a
// program that writes the map, bpfd refuses it (EACCES).
func TestHandedInDescriptors(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)

	// bpfd's maps, pinned by root where nobody may open them.
	c, err := client.Dial(e.d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name string
		perm os.FileMode
	}{{"ports", 0o644}, {"hits", 0o666}} {
		m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Name: tc.name})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Update(le32(1), le64(80), client.UpdateAny); err != nil {
			t.Fatal(err)
		}
		if err := c.Pin(m, tc.name, tc.perm); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	defer os.Remove(filepath.Join(e.d.PinRoot, "ports"))
	defer os.Remove(filepath.Join(e.d.PinRoot, "hits"))
	em := runCmd(t, e.emulatedCmdFlags([]string{"--map", "ports:r", "--map", "hits:rw"}, prog, "-inherited"), 2*time.Minute)

	// The kernel's maps: the same contents, a read-only fd of ports
	// (BPF_MAP_GET_FD_BY_ID with BPF_F_RDONLY) and a read-write one of
	// hits.
	var files []*os.File
	for i, name := range []string{"ports", "hits"} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Put(le32(1), le64(80)); err != nil {
			t.Fatal(err)
		}
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		flags := uint32(0)
		if i == 0 {
			flags = unix.BPF_F_RDONLY
		}
		var attr [12]byte
		binary.LittleEndian.PutUint32(attr[0:], uint32(id))
		binary.LittleEndian.PutUint32(attr[8:], flags)
		fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_GET_FD_BY_ID, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
		if errno != 0 {
			t.Fatalf("BPF_MAP_GET_FD_BY_ID: %v", errno)
		}
		f := os.NewFile(fd, name)
		defer f.Close()
		files = append(files, f)
	}
	cmd := exec.Command(prog, "-inherited")
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "BPFD_FDS=2", "BPFD_FDNAMES=ports:hits")
	k := runCmd(t, cmd, time.Minute)

	// The documented difference, asserted, then the rest compared.
	diff := strings.NewReplacer(
		"ports: load a writer: errno 13\n", "ports: writer returns: ok 0\n",
		"ports: lookup 1 through a dup: ok 80\n", "ports: lookup 1 through a dup: ok 1000\n")
	for _, want := range []string{"ports: load a writer: errno 13\n", "ports: update 1: errno 1\n", "ports: reader returns: ok 80\n",
		"hits: writer returns: ok 0\n", "hits: lookup 1 through a dup: ok 1000\n"} {
		if !strings.Contains(em.out, want) {
			t.Errorf("emulated run lacks %q", want)
		}
	}
	em.out = diff.Replace(em.out)
	compareRuns(t, k, em, nil)
	if t.Failed() {
		t.Logf("kernel run:\n%s\nemulated run:\n%s", k.out, em.out)
	}
	c.Close()
	os.Remove(filepath.Join(e.d.PinRoot, "ports"))
	os.Remove(filepath.Join(e.d.PinRoot, "hits"))
	e.settled(t)
}

// TestUnprivilegedDaemon runs the cilium/ebpf transcript as nobody under
// bpfctl exec --bpf against a bpfd that is itself unprivileged (a daemon
// process running as nobody, its pin root its own): the output equals the
// kernel's as root, and the daemon holds nothing once the program is gone.
func TestUnprivilegedDaemon(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	dir := emutest.WorldDir(t)
	if err := os.Chown(dir, emutest.Nobody, emutest.Nobody); err != nil {
		t.Fatal(err)
	}
	socket, pinRoot := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins")
	daemon := exec.Command(e.self, socket, pinRoot)
	daemon.Env = append(os.Environ(), roleEnv+"=daemon")
	daemon.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: emutest.Nobody, Gid: emutest.Nobody}}
	var daemonErr bytes.Buffer
	daemon.Stderr = &daemonErr
	stdin, err := daemon.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := daemon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		daemon.Wait()
	}()
	var ready string
	if _, err := fmt.Fscanln(stdout, &ready); err != nil || ready != "ready" {
		t.Fatalf("the unprivileged daemon did not start: %q %v\n%s", ready, err, daemonErr.String())
	}
	if st, err := os.Stat(pinRoot); err != nil || st.Sys().(*syscall.Stat_t).Uid != emutest.Nobody {
		t.Fatalf("pin root %s: %v, want it to be the daemon's (uid %d)", pinRoot, err, emutest.Nobody)
	}

	cmd := exec.Command(e.self, "--socket", socket, "exec", "--bpf", "--", prog, "-obj", e.obj, "-pin", "/sys/fs/bpf")
	cmd.Env = append(os.Environ(), roleEnv+"=bpfctl", "HOME="+e.dir)
	cmd.Dir = e.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: emutest.Nobody, Gid: emutest.Nobody}}
	em := runCmd(t, cmd, 2*time.Minute)
	k := e.kernel(t, prog, "-obj", e.obj, "-pin", "/sys/fs/bpf")
	compareRuns(t, k, em, nil)

	stdin.Close()
	left, err := io.ReadAll(stdout)
	if err != nil || string(left) != "objects 0 descriptors 0 connections 0\n" {
		t.Errorf("the daemon after the run: %q %v, want nothing held\n%s", left, err, daemonErr.String())
	}
}

// TestExecOptions runs the cilium/ebpf transcript under the options of
// bpfctl exec --bpf: --bpffs moves the emulated bpf file system to a
// directory that does not even exist (the transcript still equals the
// kernel's on /sys/fs/bpf); --bpf-only leaves file system calls to the
// kernel, so cilium/ebpf refuses to pin under /sys/fs/bpf (not a bpf
// file system to an unprivileged user) while everything else works;
// --bpf-trace prints each routed call with its result.
func TestExecOptions(t *testing.T) {
	e := newEnv(t)
	prog := e.ciliumprog(t)
	k := e.kernel(t, prog, "-obj", e.obj, "-pin", "/sys/fs/bpf")
	prefix := "/bpfemu-test-" + strconv.Itoa(os.Getpid()) + "/fs"
	if _, err := os.Stat(filepath.Dir(prefix)); err == nil {
		t.Fatalf("%s exists", filepath.Dir(prefix))
	}

	t.Run("bpffs", func(t *testing.T) {
		em := runCmd(t, e.emulatedCmdFlags([]string{"--bpffs", prefix}, prog, "-obj", e.obj, "-pin", prefix), 2*time.Minute)
		compareRuns(t, k, em, nil)
	})
	t.Run("bpf-only", func(t *testing.T) {
		em := runCmd(t, e.emulatedCmdFlags([]string{"--bpf-only"}, prog, "-obj", e.obj, "-pin", "/sys/fs/bpf"), 2*time.Minute)
		if em.code != 0 {
			t.Fatalf("%v", em)
		}
		// Up to the pins, the same as the kernel's.
		cut := func(s string) string { return s[:max(strings.Index(s, "pin map:"), 0)] }
		if cut(em.out) == "" || cut(em.out) != cut(k.out) {
			t.Errorf("before the pins:\nkernel:\n%s\nemulated:\n%s", cut(k.out), cut(em.out))
		}
		if !strings.Contains(em.out, "pin map: error /sys/fs/bpf/emu_hash is not on a bpf filesystem") {
			t.Errorf("pinning did not fail as without bpffs emulation:\n%s", em.out)
		}
	})
	t.Run("trace", func(t *testing.T) {
		em := runCmd(t, e.emulatedCmdFlags([]string{"--bpf-trace"}, prog, "-obj", e.obj, "-pin", "/sys/fs/bpf"), 2*time.Minute)
		compareRuns(t, k, em, nil)
		for _, re := range []string{
			`(?m)^bpfemu: tid \d+ bpf\(BPF_MAP_CREATE\) = new fd$`,
			`(?m)^bpfemu: tid \d+ bpf\(BPF_MAP_UPDATE_ELEM\) = 0$`,
			`(?m)^bpfemu: tid \d+ bpf\(BPF_MAP_LOOKUP_ELEM\) = no such file or directory$`,
			`(?m)^bpfemu: tid \d+ bpf\(BPF_PROG_LOAD\) = permission denied$`,
			`(?m)^bpfemu: tid \d+ bpf\(BPF_OBJ_PIN\) = 0$`,
			`(?m)^bpfemu: tid \d+ statfs = 0$`,
		} {
			if !regexp.MustCompile(re).MatchString(em.errOut) {
				t.Errorf("the trace lacks a line matching %s:\n%s", re, em.errOut)
			}
		}
	})
	e.settled(t)
}
