package defaults

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// fakeDir is a directory owned by uid, for statDir.
type fakeDir struct{ uid uint32 }

func (f fakeDir) Name() string       { return "d" }
func (f fakeDir) Size() int64        { return 0 }
func (f fakeDir) Mode() fs.FileMode  { return fs.ModeDir | 0o700 }
func (f fakeDir) ModTime() time.Time { return time.Time{} }
func (f fakeDir) IsDir() bool        { return true }
func (f fakeDir) Sys() any           { return &syscall.Stat_t{Uid: f.uid} }

func TestPaths(t *testing.T) {
	// /run/user/1000 exists and is 1000's; /run/user/1001 is 0's.
	statDir = func(p string) (fs.FileInfo, error) {
		switch p {
		case "/run/user/1000":
			return fakeDir{1000}, nil
		case "/run/user/1001":
			return fakeDir{0}, nil
		}
		return nil, os.ErrNotExist
	}
	t.Cleanup(func() { statDir = os.Stat })
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		euid    int
		env     func(string) string
		socket  string
		pins    string
		err     error
		clients []string
	}{
		{name: "root", euid: 0, env: env("XDG_RUNTIME_DIR", "/run/user/0"), socket: SystemSocket, pins: SystemPinRoot,
			clients: []string{SystemSocket}},
		{name: "xdg", euid: 1000, env: env("XDG_RUNTIME_DIR", "/x"), socket: "/x/bpfd/bpfd.sock", pins: "/x/bpfd/pins",
			clients: []string{"/x/bpfd/bpfd.sock", SystemSocket}},
		{name: "no xdg, own run dir", euid: 1000, env: env(), socket: "/run/user/1000/bpfd/bpfd.sock",
			pins: "/run/user/1000/bpfd/pins", clients: []string{"/run/user/1000/bpfd/bpfd.sock", SystemSocket}},
		{name: "no xdg, run dir of another user", euid: 1001, env: env(), err: ErrNoRuntimeDir,
			clients: []string{SystemSocket}},
		{name: "no xdg, no run dir", euid: 1002, env: env(), err: ErrNoRuntimeDir, clients: []string{SystemSocket}},
		{name: "env socket", euid: 1002, env: env(SocketEnv, "/s.sock"), err: ErrNoRuntimeDir, clients: []string{"/s.sock"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Socket(tt.euid, tt.env)
			if s != tt.socket || !errors.Is(err, tt.err) {
				t.Errorf("Socket = %q, %v; want %q, %v", s, err, tt.socket, tt.err)
			}
			p, err := PinRoot(tt.euid, tt.env)
			if p != tt.pins || !errors.Is(err, tt.err) {
				t.Errorf("PinRoot = %q, %v; want %q, %v", p, err, tt.pins, tt.err)
			}
			if c := ClientSockets(tt.euid, tt.env); !slices.Equal(c, tt.clients) {
				t.Errorf("ClientSockets = %q, want %q", c, tt.clients)
			}
		})
	}
}

func TestStateDir(t *testing.T) {
	for _, tt := range []struct {
		name string
		euid int
		env  map[string]string
		want string
		err  error
	}{
		{name: "root", euid: 0, want: SystemStateDir},
		{name: "xdg", euid: 5, env: map[string]string{"XDG_STATE_HOME": "/s", "HOME": "/h"}, want: "/s/bpfd"},
		{name: "home", euid: 5, env: map[string]string{"HOME": "/h"}, want: "/h/.local/state/bpfd"},
		{name: "nothing", euid: 5, err: ErrNoStateDir},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StateDir(tt.euid, func(k string) string { return tt.env[k] })
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("StateDir = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}
