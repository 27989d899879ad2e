package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/state"
)

// The daemon's lifetime beyond one process (docs/daemon.md, "What
// survives what"): the runtime directory (map storage, the journal), the
// periodic flush of pinned objects to the state directory, systemd's fd
// store, and upgrades by exec (SIGHUP, CmdDaemonUpgrade).

// Defaults of the lifetime settings.
const (
	// DefaultFlushInterval is how often pinned objects are saved to the
	// state directory (the bound on what a reboot loses).
	DefaultFlushInterval = time.Minute
	// HandoffTimeout bounds how long an upgrade waits for the daemon to
	// stand still before it gives up and serves on.
	HandoffTimeout = 10 * time.Second
	// runtimeLockFD names the runtime directory's lock in a handoff.
	runtimeLockFD = "runtime-lock"
	// activatedExtra is set ("1") in a handoff's Extra when the
	// listening socket came from socket activation.
	activatedExtra = "listener-activated"
)

// DefaultRuntimeDir returns the default runtime directory of a daemon
// with pin root pinRoot: "runtime" next to it (/run/bpfd/runtime for
// root's /run/bpfd/pins), so that every pin root has its own.
func DefaultRuntimeDir(pinRoot string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(pinRoot)), "runtime")
}

// parseLifetime parses the lifetime settings given as strings.
func (o *Options) parseLifetime(getenv func(string) string) error {
	o.FlushInterval = DefaultFlushInterval
	if o.flushRaw != "" {
		d, err := time.ParseDuration(o.flushRaw)
		if o.flushRaw == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			return fmt.Errorf("--flush-interval: %q is not a duration (30s, 5m, 0)", o.flushRaw)
		}
		o.FlushInterval = d
	}
	raw := o.fdStoreRaw
	if raw == "" {
		raw = getenv("FDSTORE")
	}
	if raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			return fmt.Errorf("--fd-store: %q is not a count of fds", raw)
		}
		o.FDStore = n
	}
	if o.RuntimeDir != "" && !filepath.IsAbs(o.RuntimeDir) {
		abs, err := filepath.Abs(o.RuntimeDir)
		if err != nil {
			return err
		}
		o.RuntimeDir = abs
	}
	return nil
}

// lifetime is what the daemon keeps beyond one process. Its methods are
// called from Main's goroutine, except upgrade (any goroutine; upgrades
// are serialised).
type lifetime struct {
	log   *zap.Logger
	rt    *state.RuntimeDir
	store *state.FDStore
	// handed is the image an upgrade handed over (nil otherwise).
	handed *state.Image
	// passed are the fds the service manager passed (LISTEN_FDS), by
	// name: the socket (socket activation) and the fd store's.
	passed map[string][]int
	// exe is the binary upgrades execute (os.Executable at start: the
	// path, so that a new version installed there is what runs).
	exe      string
	upgradeM sync.Mutex
	srv      *demux.Server
	notifier *Notifier
	// activated: the listening socket belongs to the service manager.
	activated bool
}

// openLifetime takes what a previous process left: an upgrade's image
// (state.TakeHandoff), the fds the service manager passed, the runtime
// directory (locked; with the lock an upgrade handed over), and opens the
// fd store when fdStoreMax > 0 and NOTIFY_SOCKET is set.
func openLifetime(log *zap.Logger, getenv func(string) string, runtimeDir string, fdStoreMax int) (*lifetime, error) {
	lt := &lifetime{log: log}
	img, err := state.TakeHandoff(getenv)
	if err != nil {
		return nil, err
	}
	lt.handed = img
	if img == nil {
		if lt.passed, err = state.ListenFDs(getenv, os.Getpid()); err != nil {
			return nil, err
		}
	}
	lock := -1
	if img != nil {
		if fd, ok := img.FDs[runtimeLockFD]; ok {
			lock = fd
			delete(img.FDs, runtimeLockFD)
		}
	}
	if lt.rt, err = state.OpenRuntimeDir(runtimeDir, lock); err != nil {
		lt.closePassed()
		return nil, err
	}
	if fdStoreMax > 0 {
		if lt.store, err = state.NewFDStore(getenv("NOTIFY_SOCKET"), fdStoreMax); err != nil {
			lt.close()
			return nil, err
		}
		if lt.store == nil {
			log.Warn("--fd-store given but NOTIFY_SOCKET is not set: descriptors will not survive a crash")
		}
	}
	if exe, err := os.Executable(); err == nil {
		lt.exe = exe
	}
	return lt, nil
}

// closePassed closes the passed fds nothing took.
func (lt *lifetime) closePassed() {
	for _, l := range lt.passed {
		for _, fd := range l {
			unix.Close(fd)
		}
	}
	lt.passed = nil
	if lt.handed != nil {
		for _, fd := range lt.handed.FDs {
			unix.Close(fd)
		}
		lt.handed.FDs = nil
	}
}

// close releases the runtime directory and the fd store's socket.
func (lt *lifetime) close() {
	lt.closePassed()
	lt.store.Close()
	if lt.rt != nil {
		lt.rt.Close()
	}
}

// listener returns the listening socket: the one an upgrade handed over,
// the one socket activation passed (named "bpfd.socket" or "bpfd", or
// the first listening SOCK_SEQPACKET socket among the passed fds that are
// not the fd store's), or a new one bound at path. activated says the
// socket file belongs to the service manager (or the previous process
// that was activated) and stays at shutdown.
func (lt *lifetime) listener(path string) (*net.UnixListener, bool, error) {
	if img := lt.handed; img != nil {
		for _, name := range img.Listeners {
			fd, ok := img.FDs[name]
			if !ok {
				continue
			}
			delete(img.FDs, name)
			ln, err := fileListener(fd)
			if err != nil {
				return nil, false, err
			}
			// Whether the socket file is the service manager's (left in
			// place at shutdown) or was bound by the daemon itself.
			return ln, img.Extra[activatedExtra] == "1", nil
		}
		return nil, false, errors.New("upgrade: no listening socket handed over")
	}
	chosen := -1
	for _, want := range []string{"bpfd.socket", "bpfd"} {
		for _, fd := range lt.passed[want] {
			if chosen < 0 && isSeqpacketListener(fd) {
				chosen = fd
			}
		}
	}
	if chosen < 0 {
		for name, l := range lt.passed {
			if _, _, store := state.ParseFDName(name); store {
				continue
			}
			for _, fd := range l {
				if chosen < 0 && isSeqpacketListener(fd) {
					chosen = fd
				}
			}
		}
	}
	if chosen >= 0 {
		for name, l := range lt.passed {
			for i, fd := range l {
				if fd == chosen {
					lt.passed[name] = append(l[:i:i], l[i+1:]...)
				}
			}
		}
		// Other passed sockets that are not the store's are not ours.
		for name, l := range lt.passed {
			if _, _, store := state.ParseFDName(name); !store {
				for _, fd := range l {
					unix.Close(fd)
				}
				delete(lt.passed, name)
			}
		}
		ln, err := fileListener(chosen)
		return ln, err == nil, err
	}
	if len(lt.passed) > 0 && lt.hasNonStore() {
		return nil, false, ErrActivation
	}
	ln, err := Listen(path)
	return ln, false, err
}

func (lt *lifetime) hasNonStore() bool {
	for name := range lt.passed {
		if _, _, store := state.ParseFDName(name); !store {
			return true
		}
	}
	return false
}

// fileListener makes a listener of fd (taken over).
func fileListener(fd int) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close() // FileListener dups it
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listening socket: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, ErrActivation
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// restore rebuilds srv: from an upgrade's image; or, in the same boot,
// from the journal the previous process left (with the fds the service
// manager kept); and the pin records of the state directory.
func (lt *lifetime) restore(srv *demux.Server, sd *StateDir) {
	rs := &demux.Restore{SameBoot: lt.rt.SameBoot}
	switch {
	case lt.handed != nil:
		rs.Image, rs.Upgrade = lt.handed, true
	case lt.rt.SameBoot:
		img, torn, err := state.ReadJournal(state.JournalPath(lt.rt.Dir()))
		switch {
		case err == nil:
			rs.Image = img
			if torn {
				lt.log.Warn("the journal's last record was cut short by the crash (a command that never answered); it is ignored")
			}
		case errors.Is(err, os.ErrNotExist):
		default:
			lt.log.Error("cannot read the journal; restoring pinned objects from their records only", zap.Error(err))
		}
	}
	rs.FDs = lt.passed
	lt.passed = nil
	objs, errs := sd.Load()
	for _, err := range errs {
		lt.log.Error("cannot read saved pinned object", zap.Error(err))
	}
	rs.Pinned = objs
	if _, err := srv.Restore(rs); err != nil {
		lt.log.Error("restore: journal", zap.Error(err))
	}
	if lt.handed != nil {
		lt.handed.FDs = nil // taken over by the server
	}
}

// flush saves every pinned object every interval until ctx ends.
func (lt *lifetime) flush(ctx context.Context, srv *demux.Server, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			start := time.Now()
			n, err := srv.FlushPinned()
			if err != nil {
				lt.log.Error("periodic flush of pinned objects failed", zap.Error(err))
				continue
			}
			lt.log.Debug("pinned objects flushed to the state directory", zap.Int("objects", n),
				zap.Duration("took", time.Since(start)))
		}
	}
}

// upgrade hands everything to a fresh process of the binary at lt.exe
// (see demux.Server.Handoff). It returns only if that fails, after the
// server serves on.
func (lt *lifetime) upgrade() error {
	lt.upgradeM.Lock()
	defer lt.upgradeM.Unlock()
	if lt.exe == "" || lt.srv == nil {
		return demux.ErrNoUpgrade
	}
	activated := lt.activated
	exe := strings.TrimSuffix(lt.exe, " (deleted)")
	if _, err := os.Stat(exe); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	lt.notifier.Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10) +
		"\nSTATUS=upgrading: handing over to " + exe)
	lt.log.Info("upgrading: handing everything over to a new process", zap.String("binary", exe))
	img, err := lt.srv.Handoff(HandoffTimeout)
	if err != nil {
		lt.notifier.Notify("READY=1\nSTATUS=upgrade abandoned: " + err.Error())
		return err
	}
	if fd := lt.rt.LockFD(); fd >= 0 {
		img.FDs[runtimeLockFD] = fd
	}
	if activated {
		img.Extra = map[string]string{activatedExtra: "1"}
	}
	lt.log.Sync()
	err = state.Exec(exe, os.Args, os.Environ(), img)
	lt.srv.Resume(err)
	lt.notifier.Notify("READY=1\nSTATUS=upgrade failed: " + err.Error())
	return err
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds (sd_notify's
// MONOTONIC_USEC).
func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}
