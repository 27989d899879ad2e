package state

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/state/statetest"
)

// TestMain runs the helper processes of the tests below and fails on
// leaked fds.
func TestMain(m *testing.M) {
	switch os.Getenv("STATE_TEST_CHILD") {
	case "exec":
		os.Exit(childExec())
	case "after":
		os.Exit(childAfter())
	}
	// Start the runtime's network poller so its fds are in the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := countFDs()
	code := m.Run()
	if code == 0 {
		// Give finalizers of closed files a moment.
		for i := 0; i < 50 && countFDs() > before; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if n := countFDs(); n > before {
			fmt.Fprintf(os.Stderr, "leaked %d fds\n", n-before)
			code = 1
		}
	}
	os.Exit(code)
}

func countFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// childExec is the process that hands over: fd 3 is a pipe to the test,
// which it names in the image, then execs the test binary again.
func childExec() int {
	img := &Image{LastID: 1, Objects: []Object{{ID: 1, Key: strings.Repeat("f", 32), Kind: KindMap,
		Map: &Map{Region: "map-x.region"}}}, FDs: map[string]int{"report": 3}}
	unix.CloseOnExec(3)
	env := append(withoutEnv(os.Environ(), "STATE_TEST_CHILD"), "STATE_TEST_CHILD=after")
	err := Exec(os.Args[0], os.Args, env, img)
	fmt.Fprintf(os.NewFile(3, "report"), "exec failed: %v\n", err)
	return 1
}

// childAfter is the exec'd program: it takes the image over and reports
// what it got through the fd the image names.
func childAfter() int {
	img, err := TakeHandoff(os.Getenv)
	if err != nil || img == nil {
		fmt.Fprintf(os.Stderr, "TakeHandoff: %v %v\n", img, err)
		return 1
	}
	fd, ok := img.FDs["report"]
	if !ok {
		return 1
	}
	flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	f := os.NewFile(uintptr(fd), "report")
	fmt.Fprintf(f, "pid=%d objects=%d region=%s cloexec=%v env=%q\n", os.Getpid(), len(img.Objects),
		img.Objects[0].Map.Region, flags&unix.FD_CLOEXEC != 0, os.Getenv(HandoffEnv))
	f.Close()
	return 0
}

// TestExecHandoff checks Exec and TakeHandoff with real processes: the
// exec'd program (same pid) gets the image and the fd it names, at the
// same number, made close-on-exec again, and the environment variable is
// gone.
func TestExecHandoff(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STATE_TEST_CHILD=exec")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	out, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v (%s)", err, out)
	}
	want := fmt.Sprintf("pid=%d objects=1 region=map-x.region cloexec=true env=\"\"\n", cmd.Process.Pid)
	if string(out) != want {
		t.Fatalf("exec'd program reported %q, want %q", out, want)
	}
}

// TestExecFailure checks that a failed exec returns with the fds
// close-on-exec again.
func TestExecFailure(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	img := &Image{FDs: map[string]int{"w": int(w.Fd())}}
	err = Exec(filepath.Join(t.TempDir(), "missing"), []string{"x"}, nil, img)
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Exec of a missing program: %v", err)
	}
	flags, _ := unix.FcntlInt(w.Fd(), unix.F_GETFD, 0)
	if flags&unix.FD_CLOEXEC == 0 {
		t.Fatal("fd left without close-on-exec after a failed exec")
	}
}

// TestFDStore checks the fd store protocol against a fake service
// manager: stored fds arrive with their names, FDSTOREREMOVE drops them,
// fds that hang up are dropped, the maximum is kept, and the fds come
// back to the next process through ListenFDs.
func TestFDStore(t *testing.T) {
	sd := statetest.NewSystemd(t, 3)
	st, err := NewFDStore(sd.Socket, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ends [4][2]int
	for i := range ends {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		ends[i] = [2]int{p[0], p[1]}
		defer unix.Close(p[0])
	}
	for i := 0; i < 3; i++ {
		if err := st.Store(FDName(PrefixDescriptor, uint64(i+10)), ends[i][0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Store("d99", ends[3][0]); !errors.Is(err, ErrStoreFull) {
		t.Fatalf("fourth fd: %v, want ErrStoreFull", err)
	}
	if err := st.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if !sd.WaitState("READY=1", 0, nil) {
		t.Fatal("no READY")
	}
	if got := names(sd.Store()); got != "da db dc" {
		t.Fatalf("store holds %q", got)
	}
	if err := st.Remove("db"); err != nil {
		t.Fatal(err)
	}
	// The client ends go: systemd drops what it holds of them.
	for i := 0; i < 3; i++ {
		unix.Close(ends[i][1])
	}
	st.Notify("STATUS=sync")
	sd.WaitState("STATUS=sync", 0, nil)
	if got := names(sd.Store()); got != "" {
		t.Fatalf("after remove and hangups the store holds %q", got)
	}
	unix.Close(ends[3][1])
}

func names(s []statetest.Stored) string {
	var n []string
	for _, x := range s {
		n = append(n, x.Name)
	}
	return strings.Join(n, " ")
}

func TestListenFDs(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	pid := os.Getpid()
	if got, err := ListenFDs(env(nil), pid); got != nil || err != nil {
		t.Fatalf("no LISTEN_PID: %v %v", got, err)
	}
	if got, err := ListenFDs(env(map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "1"}), pid); got != nil || err != nil {
		t.Fatalf("another pid: %v %v", got, err)
	}
	if _, err := ListenFDs(env(map[string]string{"LISTEN_PID": strconv.Itoa(pid), "LISTEN_FDS": "99999999"}), pid); err == nil {
		t.Fatal("implausible count accepted")
	}
	// Two fds in a row, as the service manager passes them from 3 on.
	var two [2]int
	for {
		a, _ := unix.Dup(0)
		b, _ := unix.Dup(0)
		if b == a+1 {
			two = [2]int{a, b}
			break
		}
		defer unix.Close(a)
		defer unix.Close(b)
	}
	defer unix.Close(two[0])
	defer unix.Close(two[1])
	got, err := listenFDs(env(map[string]string{"LISTEN_PID": strconv.Itoa(pid), "LISTEN_FDS": "2",
		"LISTEN_FDNAMES": "bpfd.socket"}), pid, two[0])
	if err != nil || len(got["bpfd.socket"]) != 1 || got["bpfd.socket"][0] != two[0] || len(got["unknown"]) != 1 || got["unknown"][0] != two[1] {
		t.Fatalf("ListenFDs = %v, %v", got, err)
	}
}

func TestRuntimeDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rt")
	d, err := OpenRuntimeDir(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	if d.SameBoot {
		t.Fatal("a new directory is SameBoot")
	}
	os.WriteFile(filepath.Join(dir, "map-1.region"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "map-2.region"), nil, 0o600)
	// A second daemon is refused, naming the holder.
	if _, err := OpenRuntimeDir(dir, -1); !errors.Is(err, ErrRuntimeLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second open: %v", err)
	}
	d.Close()
	d, err = OpenRuntimeDir(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	if !d.SameBoot {
		t.Fatal("reopened in the same boot: not SameBoot")
	}
	gone := d.Sweep(func(n string) bool { return strings.HasSuffix(n, ".region") }, func(n string) bool { return n == "map-1.region" })
	if len(gone) != 1 || gone[0] != "map-2.region" {
		t.Fatalf("Sweep removed %v", gone)
	}
	// An upgrade hands the lock over.
	lfd, err := unix.FcntlInt(uintptr(d.LockFD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.lock.Close()
	d2, err := OpenRuntimeDir(dir, lfd)
	if err != nil {
		t.Fatalf("inherited lock: %v", err)
	}
	d2.Close()
	// Another boot's files are not taken for live state.
	os.WriteFile(filepath.Join(dir, runtimeBoot), []byte("another-boot\n"), 0o600)
	d, err = OpenRuntimeDir(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.SameBoot {
		t.Fatal("another boot's directory taken as SameBoot")
	}
	if _, err := os.Stat(filepath.Join(dir, "map-1.region")); !os.IsNotExist(err) {
		t.Fatalf("another boot's region kept: %v", err)
	}
}
