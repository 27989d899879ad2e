// Package defaults holds the default paths that bpfd, bpfctl and the Go
// client must agree on: where the daemon's socket, pin root and state
// directory are when nothing is configured. One table, so that a daemon
// started without flags and a client started without $BPFD_SOCKET meet.
//
// Root uses the system paths (/run/bpfd/bpfd.sock, /run/bpfd/pins,
// /var/lib/bpfd). Another user uses its runtime directory: $XDG_RUNTIME_DIR,
// or, when that is unset (su, sudo -u, cron, ssh without a PAM session),
// /run/user/UID if that directory exists and belongs to the user (as
// systemd-logind makes it). A client that finds no daemon in its own
// runtime directory tries the system socket next, so an unprivileged user
// reaches a system-wide bpfd without configuration.
//
// Functions here are pure apart from stat(2) of /run/user/UID and safe for
// concurrent use.
package defaults

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// System paths, used by root and tried last by other users' clients.
const (
	SystemSocket   = "/run/bpfd/bpfd.sock"
	SystemPinRoot  = "/run/bpfd/pins"
	SystemStateDir = "/var/lib/bpfd"
)

// SocketEnv overrides the socket path for bpfd, bpfctl and the client.
const SocketEnv = "BPFD_SOCKET"

// ErrNoRuntimeDir: not root, XDG_RUNTIME_DIR unset and no /run/user/UID of
// the user's own, so there is no per-user default.
var ErrNoRuntimeDir = errors.New("not running as root, XDG_RUNTIME_DIR is not set and /run/user/UID does not exist: pass --socket and --pin-root or set BPFD_SOCKET and BPFD_PIN_ROOT")

// ErrNoStateDir: not root, and neither XDG_STATE_HOME nor HOME is set.
var ErrNoStateDir = errors.New("XDG_STATE_HOME and HOME are not set and not running as root: pass --state-dir or set BPFD_STATE_DIR")

// statDir is os.Stat; tests replace it.
var statDir = os.Stat

// RuntimeDir returns the runtime directory of user uid: $XDG_RUNTIME_DIR
// if set, else /run/user/UID if it is a directory owned by uid, else
// ErrNoRuntimeDir.
func RuntimeDir(uid int, getenv func(string) string) (string, error) {
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return d, nil
	}
	d := filepath.Join("/run/user", strconv.Itoa(uid))
	fi, err := statDir(d)
	if err != nil || !fi.IsDir() {
		return "", ErrNoRuntimeDir
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
		return "", ErrNoRuntimeDir
	}
	return d, nil
}

// Socket returns the default socket path of a daemon with effective uid
// euid: SystemSocket for root, else RUNTIME_DIR/bpfd/bpfd.sock, or
// ErrNoRuntimeDir. The environment override is the caller's business.
func Socket(euid int, getenv func(string) string) (string, error) {
	if euid == 0 {
		return SystemSocket, nil
	}
	d, err := RuntimeDir(euid, getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "bpfd", "bpfd.sock"), nil
}

// PinRoot returns the default pin root of a daemon with effective uid
// euid: SystemPinRoot for root, else RUNTIME_DIR/bpfd/pins, or
// ErrNoRuntimeDir.
func PinRoot(euid int, getenv func(string) string) (string, error) {
	if euid == 0 {
		return SystemPinRoot, nil
	}
	d, err := RuntimeDir(euid, getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "bpfd", "pins"), nil
}

// StateDir returns the default state directory of a daemon with effective
// uid euid: SystemStateDir for root, else $XDG_STATE_HOME/bpfd, else
// $HOME/.local/state/bpfd, or ErrNoStateDir.
func StateDir(euid int, getenv func(string) string) (string, error) {
	if euid == 0 {
		return SystemStateDir, nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "bpfd"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "bpfd"), nil
	}
	return "", ErrNoStateDir
}

// ClientSockets returns the sockets a client with effective uid euid tries,
// in order: $BPFD_SOCKET alone if set; else, for root, SystemSocket; for
// other users their own daemon's socket (Socket) if they have a runtime
// directory, then SystemSocket.
func ClientSockets(euid int, getenv func(string) string) []string {
	if p := getenv(SocketEnv); p != "" {
		return []string{p}
	}
	if euid == 0 {
		return []string{SystemSocket}
	}
	var out []string
	if p, err := Socket(euid, getenv); err == nil {
		out = append(out, p)
	}
	return append(out, SystemSocket)
}
