package daemon

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "empty", in: "", want: map[string]string{}},
		{name: "keys, comments, spaces", in: "# bpfd\n\nsocket = /s.sock\n  pin-root=/p  \nlog-level = debug\n",
			want: map[string]string{"socket": "/s.sock", "pin-root": "/p", "log-level": "debug"}},
		{name: "quoted value", in: `state-dir = " /with space "`, want: map[string]string{"state-dir": " /with space "}},
		{name: "unknown key", in: "sockets = /x\n", wantErr: true},
		{name: "no equals", in: "socket /x\n", wantErr: true},
		{name: "duplicate", in: "socket = /a\nsocket = /b\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("got %v, %v; want an ErrConfig", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestOptionsFlagEnvFileDefault(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bpfd.conf")
	if err := os.WriteFile(conf, []byte("pin-root = /file/pins\nstate-dir = /file/state\nsocket = /file/sock\nlog-format = json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootOr := func(root, user string) string {
		if os.Geteuid() == 0 {
			return root
		}
		return user
	}
	userEnv := map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"}
	tests := []struct {
		name                   string
		args                   []string
		env                    map[string]string
		pins, state, sock, fmt string
		wantErr                bool
	}{
		{name: "defaults", env: userEnv,
			pins:  rootOr("/run/bpfd/pins", "/run/user/1000/bpfd/pins"),
			state: rootOr("/var/lib/bpfd", "/home/u/.local/state/bpfd"),
			sock:  rootOr("/run/bpfd/bpfd.sock", "/run/user/1000/bpfd/bpfd.sock"), fmt: "console"},
		{name: "file beats default", args: []string{"--config", conf}, env: userEnv,
			pins: "/file/pins", state: "/file/state", sock: "/file/sock", fmt: "json"},
		{name: "config from env", env: map[string]string{"BPFD_CONFIG": conf},
			pins: "/file/pins", state: "/file/state", sock: "/file/sock", fmt: "json"},
		{name: "env beats file", args: []string{"--config", conf},
			env:  map[string]string{"BPFD_PIN_ROOT": "/env/pins", "BPFD_LOG_FORMAT": "console"},
			pins: "/env/pins", state: "/file/state", sock: "/file/sock", fmt: "console"},
		{name: "flag beats env and file", args: []string{"--config", conf, "--pin-root", "/flag/pins", "--state-dir=/flag/state"},
			env:  map[string]string{"BPFD_PIN_ROOT": "/env/pins", "BPFD_STATE_DIR": "/env/state"},
			pins: "/flag/pins", state: "/flag/state", sock: "/file/sock", fmt: "json"},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "nope")}, wantErr: true},
		{name: "bad value in file", args: []string{"--config", conf, "--log-format", "xml"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseOptions(tt.args, env(tt.env), &bytes.Buffer{})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %+v, want an error", o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.PinRoot != tt.pins || o.StateDir != tt.state || o.Socket != tt.sock || o.LogFormat != tt.fmt {
				t.Fatalf("got pins %q state %q socket %q format %q; want %q %q %q %q",
					o.PinRoot, o.StateDir, o.Socket, o.LogFormat, tt.pins, tt.state, tt.sock, tt.fmt)
			}
		})
	}
}

func TestDefaultDirs(t *testing.T) {
	tests := []struct {
		name     string
		euid     int
		env      map[string]string
		pins     string
		state    string
		pinsErr  error
		stateErr error
	}{
		{name: "root", euid: 0, pins: "/run/bpfd/pins", state: "/var/lib/bpfd"},
		{name: "user xdg", euid: 1000, env: map[string]string{"XDG_RUNTIME_DIR": "/r", "XDG_STATE_HOME": "/s", "HOME": "/h"},
			pins: "/r/bpfd/pins", state: "/s/bpfd"},
		{name: "user home", euid: 1000, env: map[string]string{"XDG_RUNTIME_DIR": "/r", "HOME": "/h"},
			pins: "/r/bpfd/pins", state: "/h/.local/state/bpfd"},
		{name: "user nothing", euid: 2147483000, pinsErr: ErrNoRuntimeDir, stateErr: ErrNoStateDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DefaultPinRoot(tt.euid, env(tt.env))
			if p != tt.pins || !errors.Is(err, tt.pinsErr) && err != tt.pinsErr {
				t.Fatalf("DefaultPinRoot = %q, %v", p, err)
			}
			s, err := DefaultStateDir(tt.euid, env(tt.env))
			if s != tt.state || !errors.Is(err, tt.stateErr) && err != tt.stateErr {
				t.Fatalf("DefaultStateDir = %q, %v", s, err)
			}
		})
	}
}
