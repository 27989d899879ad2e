package client

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// listerView is what the "lister" child reports.
type listerView struct {
	UID        int      `json:"uid"`
	Names      []string `json:"names"`
	SharedPids int      `json:"shared_pids"`  // holders of "shared" shown to it
	SharedMore int      `json:"shared_other"` // holders of other users
	ByID       int      `json:"by_id"`        // records for "shared" by id
	RootByName int      `json:"root_by_name"` // records for "rootonly" by name
}

// childLister imports the map descriptor it inherited as fd 3, creates its
// own map "mine", reports what it may list, then holds everything until
// stdin closes.
func childLister() error {
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	defer c.Close()
	shared, err := c.ImportMap(3)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	unix.Close(3)
	defer shared.Close()
	mine, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "mine"})
	if err != nil {
		return err
	}
	defer mine.Close()
	v := listerView{UID: os.Getuid()}
	all, err := c.Objects(ObjectFilter{Holders: true})
	if err != nil {
		return err
	}
	for _, r := range all {
		v.Names = append(v.Names, r.Name)
		if r.Name == "shared" {
			v.SharedPids, v.SharedMore = len(r.Pids), r.OtherPids
		}
	}
	info, _ := shared.Info()
	byID, err := c.Objects(ObjectFilter{ID: info.ID})
	if err != nil {
		return err
	}
	v.ByID = len(byID)
	byName, err := c.Objects(ObjectFilter{Name: "rootonly"})
	if err != nil {
		return err
	}
	v.RootByName = len(byName)
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	return nil
}

// TestObjectsVisibility: a client lists the objects its uid owns and those
// it holds, never another user's others; holders of other users are only
// counted; root lists everything with every holder.
func TestObjectsVisibility(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	shared := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Name: "shared"})
	newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Name: "rootonly"})
	ro, err := shared.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	f := os.NewFile(uintptr(dupFD(t, ro.FD())), "shared")
	defer f.Close()
	cmd := child(t, "lister", []*os.File{f}, socketEnvTest+"="+s.path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("lister: %v", err)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("lister output: %v", err)
	}
	var v listerView
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("lister output %q: %v", line, err)
	}
	other := v.UID != os.Getuid()
	if other {
		// Another user: its own map and the one it holds, nothing else.
		if !slices.Equal(v.Names, []string{"shared", "mine"}) || v.RootByName != 0 || v.ByID != 1 {
			t.Errorf("uid %d lists %+v; want only shared (held) and mine (owned)", v.UID, v)
		}
		if v.SharedPids != 1 || v.SharedMore < 1 {
			t.Errorf("uid %d sees holders of shared %d (others %d); want itself, and ours counted", v.UID, v.SharedPids, v.SharedMore)
		}
	} else {
		t.Logf("not root: the child runs as our uid, so it sees everything (%+v)", v)
		if len(v.Names) < 3 {
			t.Errorf("same-uid lister sees %v", v.Names)
		}
	}
	// We see everything, with the child as a holder of shared and the
	// owner of mine.
	all, err := c.Objects(ObjectFilter{Holders: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range all {
		names = append(names, r.Name)
		switch r.Name {
		case "shared":
			if !slices.ContainsFunc(r.Pids, func(p PidRecord) bool { return p.PID == int32(cmd.Process.Pid) }) {
				t.Errorf("holders of shared %+v do not include the child %d", r.Pids, cmd.Process.Pid)
			}
		case "mine":
			if other && r.OwnerUID != uint32(v.UID) {
				t.Errorf("mine owned by %d, want %d", r.OwnerUID, v.UID)
			}
		}
	}
	if os.Geteuid() == 0 && !slices.Equal(names, []string{"shared", "rootonly", "mine"}) {
		t.Errorf("root lists %v", names)
	}
	if _, err := c.Objects(ObjectFilter{Kind: "nosuch"}); err == nil {
		t.Error("unknown kind accepted")
	}
}

// dupFD duplicates fd (close-on-exec), closed at cleanup if not taken.
func dupFD(t *testing.T, fd int) int {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
