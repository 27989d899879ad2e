package client

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Descriptor inheritance, after systemd's LISTEN_FDS convention: a parent
// (bpfctl exec) starts a program with bpfd descriptors open as fds
// InheritFirstFD, InheritFirstFD+1, ..., their count in $BPFD_FDS and
// their names, colon-separated, in $BPFD_FDNAMES. The program receives
// capabilities without knowing any pin path.
const (
	// InheritFDsEnv holds the number of inherited descriptors.
	InheritFDsEnv = "BPFD_FDS"
	// InheritNamesEnv holds their names, separated by ':'.
	InheritNamesEnv = "BPFD_FDNAMES"
	// InheritFirstFD is the first inherited fd number.
	InheritFirstFD = 3
	// maxInherited bounds BPFD_FDS.
	maxInherited = 1 << 16
)

// Inherited is one descriptor a process inherited from its parent: its
// name (from $BPFD_FDNAMES, or "fdN" when no names were given) and its fd.
type Inherited struct {
	Name string
	FD   int
}

// ErrNotInherited: no inherited descriptor has the name asked for (ENOENT).
var ErrNotInherited = errno.New(unix.ENOENT, "bpfd: no inherited descriptor by that name")

var (
	inheritOnce sync.Once
	inherited   []Inherited
	inheritErr  error
)

// InheritedDescriptors returns the bpfd descriptors this process inherited
// (see InheritFDsEnv): nil and no error when $BPFD_FDS is unset. The first
// call reads $BPFD_FDS and $BPFD_FDNAMES and unsets them, so that children
// of this process do not take fds they did not inherit, checks that every
// fd is open and a socket, and sets close-on-exec on each; later calls
// return the same result. It is safe for concurrent use.
//
// The process owns the fds: ImportInherited and ImportInheritedProgram
// duplicate them, and the process may close them once imported.
//
// Errors match ErrInvalid for a malformed $BPFD_FDS or a name count that
// does not match it, and ErrBadDescriptor (EBADF) for an fd that is not
// open or not a socket.
func InheritedDescriptors() ([]Inherited, error) {
	inheritOnce.Do(func() {
		n, ok := os.LookupEnv(InheritFDsEnv)
		names, hasNames := os.LookupEnv(InheritNamesEnv)
		os.Unsetenv(InheritFDsEnv)
		os.Unsetenv(InheritNamesEnv)
		if ok {
			inherited, inheritErr = parseInherited(n, names, hasNames, checkInheritedFD)
		}
	})
	return append([]Inherited(nil), inherited...), inheritErr
}

// parseInherited parses $BPFD_FDS (n) and $BPFD_FDNAMES (names, if
// hasNames) and checks each fd with check.
func parseInherited(n, names string, hasNames bool, check func(fd int) error) ([]Inherited, error) {
	count, err := strconv.Atoi(n)
	if err != nil || count < 0 || count > maxInherited {
		return nil, invalid("bpfd: " + InheritFDsEnv + "=" + strconv.Quote(n) + " is not a descriptor count")
	}
	if count == 0 {
		return nil, nil
	}
	var list []string
	if hasNames {
		list = strings.Split(names, ":")
		if len(list) != count {
			return nil, invalid(fmt.Sprintf("bpfd: %s names %d descriptors but %s is %d",
				InheritNamesEnv, len(list), InheritFDsEnv, count))
		}
	}
	out := make([]Inherited, count)
	for i := range out {
		fd := InheritFirstFD + i
		name := "fd" + strconv.Itoa(fd)
		if list != nil && list[i] != "" {
			name = list[i]
		}
		if err := check(fd); err != nil {
			return nil, err
		}
		out[i] = Inherited{Name: name, FD: fd}
	}
	return out, nil
}

// checkInheritedFD checks that fd is an open socket and sets close-on-exec
// on it.
func checkInheritedFD(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("bpfd: inherited fd %d: %w", fd, ErrBadDescriptor)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("bpfd: inherited fd %d is not a socket: %w", fd, ErrBadDescriptor)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	return nil
}

// inheritedFD returns the fd of the inherited descriptor called name.
func inheritedFD(name string) (int, error) {
	list, err := InheritedDescriptors()
	if err != nil {
		return -1, err
	}
	for _, in := range list {
		if in.Name == name {
			return in.FD, nil
		}
	}
	return -1, fmt.Errorf("bpfd: inherited descriptor %q: %w", name, ErrNotInherited)
}

// ImportInherited imports the map descriptor inherited under name (see
// InheritedDescriptors) and returns a Map with its mode; the Map owns a
// duplicate, the inherited fd stays open. It returns ErrNotInherited
// (ENOENT) if no inherited descriptor has that name, the errors of
// InheritedDescriptors, and those of ImportMap (ErrInvalid if the
// descriptor names a program).
func (c *Conn) ImportInherited(name string) (*Map, error) {
	fd, err := inheritedFD(name)
	if err != nil {
		return nil, err
	}
	return c.ImportMap(fd)
}

// ImportInheritedProgram is ImportInherited for a program descriptor.
func (c *Conn) ImportInheritedProgram(name string) (*Program, error) {
	fd, err := inheritedFD(name)
	if err != nil {
		return nil, err
	}
	return c.ImportProgram(fd)
}
