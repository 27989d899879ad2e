package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// RuntimeDir is the directory that holds a daemon's map storage (region
// files) and its journal: meant for tmpfs (/run), where it outlives the
// process but not the machine. It is locked for the daemon's life (one
// daemon per runtime directory), and records the boot it belongs to, so
// that files a previous boot left on a persistent filesystem are never
// taken for live state (after a power loss they may be torn).
type RuntimeDir struct {
	dir  string
	lock *os.File
	// SameBoot is true when the directory's contents were written during
	// this boot: a restart after a crash, a clean stop or an upgrade
	// finds the live state of its predecessor there.
	SameBoot bool
}

// BootIDFile is where the kernel gives the boot's random id.
const BootIDFile = "/proc/sys/kernel/random/boot_id"

const (
	runtimeLock = "lock"
	runtimeBoot = "boot-id"
)

// ErrRuntimeLocked: another daemon holds the runtime directory.
var ErrRuntimeLocked = errors.New("runtime directory is in use by another bpfd")

// BootID returns this boot's id.
func BootID() (string, error) {
	b, err := os.ReadFile(BootIDFile)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}

// OpenRuntimeDir opens (creating it 0700) the runtime directory dir and
// takes its lock (flock on "lock", holding the pid), failing with an error
// wrapping ErrRuntimeLocked that names the holder. If the directory's
// recorded boot is not this one (or none is recorded), everything in it
// but the lock is removed and SameBoot is false. inherited, if not -1, is
// an fd of the lock file whose lock this process already holds (handed
// over by an upgrade); it is taken over.
func OpenRuntimeDir(dir string, inherited int) (*RuntimeDir, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("runtime directory %q is not absolute", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lock *os.File
	if inherited >= 0 {
		unix.CloseOnExec(inherited)
		lock = os.NewFile(uintptr(inherited), filepath.Join(dir, runtimeLock))
		if err := unix.Flock(inherited, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			lock.Close()
			return nil, fmt.Errorf("%s: inherited lock: %w", dir, os.NewSyscallError("flock", err))
		}
		if err := writePid(lock); err != nil {
			lock.Close()
			return nil, err
		}
	} else {
		var err error
		if lock, err = LockFile(filepath.Join(dir, runtimeLock), ErrRuntimeLocked, "--runtime-dir"); err != nil {
			return nil, err
		}
	}
	d := &RuntimeDir{dir: dir, lock: lock}
	boot, err := BootID()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("reading the boot id: %w", err)
	}
	old, err := os.ReadFile(filepath.Join(dir, runtimeBoot))
	d.SameBoot = err == nil && string(bytes.TrimSpace(old)) == boot
	if !d.SameBoot {
		ents, err := os.ReadDir(dir)
		if err != nil {
			lock.Close()
			return nil, err
		}
		for _, e := range ents {
			if e.Name() != runtimeLock {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, runtimeBoot), []byte(boot+"\n"), 0o600); err != nil {
			lock.Close()
			return nil, err
		}
	}
	return d, nil
}

// Dir returns the directory.
func (d *RuntimeDir) Dir() string { return d.dir }

// LockFD returns the lock file's descriptor (owned by d), to hand over
// to an upgraded process.
func (d *RuntimeDir) LockFD() int {
	if d.lock == nil {
		return -1
	}
	return int(d.lock.Fd())
}

// Close releases the lock. Idempotent.
func (d *RuntimeDir) Close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// Sweep removes the files of the directory that isRegion recognises as
// map regions and keep does not claim (orphans of objects that died with
// a previous process), and returns their names.
func (d *RuntimeDir) Sweep(isRegion func(string) bool, keep func(string) bool) []string {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil
	}
	var gone []string
	for _, e := range ents {
		if n := e.Name(); isRegion(n) && !keep(n) {
			if os.Remove(filepath.Join(d.dir, n)) == nil {
				gone = append(gone, n)
			}
		}
	}
	return gone
}

// LockFile opens the lock file at path (creating it, mode 0600) and takes
// an exclusive flock on it without waiting, then writes this process's pid
// into it for whoever finds it held. If another process holds it, the
// error wraps locked and names the holder's pid and the flag (e.g.
// "--state-dir") that gives each daemon a directory of its own. The caller
// owns the file: closing it releases the lock.
func LockFile(path string, locked error, flag string) (*os.File, error) {
	lock, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := "unknown pid"
		if b, rerr := os.ReadFile(path); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
			holder = "pid " + string(bytes.TrimSpace(b))
		}
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w (%s); give each daemon its own %s", filepath.Dir(path), locked, holder, flag)
		}
		return nil, os.NewSyscallError("flock", err)
	}
	if err := writePid(lock); err != nil {
		lock.Close()
		return nil, err
	}
	return lock, nil
}

// writePid records this process's pid in a lock file it holds.
func writePid(lock *os.File) error {
	if err := lock.Truncate(0); err != nil {
		return err
	}
	_, err := lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}
