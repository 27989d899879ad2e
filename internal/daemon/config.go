package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/bpfd-project/bpfd/internal/defaults"
)

// Settings that can come from flags, the environment or the config file.
// Each key is a flag name; its environment variable is BPFD_ followed by
// the name in upper case with '-' as '_' (socket → BPFD_SOCKET, pin-root →
// BPFD_PIN_ROOT).
var configKeys = []string{"socket", "pin-root", "state-dir", "log-level", "log-format",
	"runtime-dir", "flush-interval", "fd-store",
	"max-memory", "memory-quota", "map-memory-quota", "bulk-slots", "bulk-nice", "metrics"}

// ConfigKeys returns the keys of the config file (the flag names of the
// settings).
func ConfigKeys() []string { return append([]string(nil), configKeys...) }

// EnvName returns the environment variable for setting key.
func EnvName(key string) string {
	return "BPFD_" + strings.ToUpper(strings.ReplaceAll(key, "-", "_"))
}

// ErrConfig wraps every config file error.
var ErrConfig = errors.New("config file")

// ParseConfig parses a config file: one `key = value` per line, keys
// being flag names (socket, pin-root, state-dir, log-level, log-format);
// blank lines and lines starting with '#' are ignored; a value may be
// quoted with double quotes (to keep leading or trailing spaces). Unknown
// keys and repeated keys are errors (wrapping ErrConfig) naming the line.
func ParseConfig(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: want key = value", ErrConfig, n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		known := false
		for _, ck := range configKeys {
			known = known || ck == k
		}
		if !known {
			return nil, fmt.Errorf("%w: line %d: unknown key %q", ErrConfig, n, k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%w: line %d: %q set twice", ErrConfig, n, k)
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return out, nil
}

// DefaultPinRoot returns the default pin root for a process with
// effective uid euid: /run/bpfd/pins for root, else
// $XDG_RUNTIME_DIR/bpfd/pins (/run/user/UID when XDG_RUNTIME_DIR is unset
// and that directory is the user's), or ErrNoRuntimeDir.
func DefaultPinRoot(euid int, getenv func(string) string) (string, error) {
	return defaults.PinRoot(euid, getenv)
}

// ErrNoStateDir: not root, and neither XDG_STATE_HOME nor HOME is set.
var ErrNoStateDir = defaults.ErrNoStateDir

// DefaultStateDir returns the default state directory for a process with
// effective uid euid: /var/lib/bpfd for root, else $XDG_STATE_HOME/bpfd,
// else $HOME/.local/state/bpfd, or ErrNoStateDir.
func DefaultStateDir(euid int, getenv func(string) string) (string, error) {
	return defaults.StateDir(euid, getenv)
}

// readConfig reads the config file at path.
func readConfig(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	m, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
