package seccomp

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

//go:generate go run gen_syscalls.go /usr/include/x86_64-linux-gnu/asm/unistd_64.h zsyscalls_amd64.go

// ErrUnknownSyscall is returned (wrapped, naming the syscall) by ParseSyscalls
// for a name that is not in the x86_64 table.
var ErrUnknownSyscall = errno.New(unix.EINVAL, "seccomp: unknown syscall")

type syscallEntry struct {
	name string
	nr   uint32
}

// SyscallNumber returns the x86_64 number of the syscall called name (as in
// asm/unistd_64.h, without the __NR_ prefix) and whether it is known.
func SyscallNumber(name string) (uint32, bool) {
	i := sort.Search(len(syscallTable), func(i int) bool { return syscallTable[i].name >= name })
	if i < len(syscallTable) && syscallTable[i].name == name {
		return syscallTable[i].nr, true
	}
	return 0, false
}

// SyscallName returns the x86_64 name of syscall number nr, or "" if the table
// has none. It scans the table; it is meant for messages, not hot paths.
func SyscallName(nr uint32) string {
	for _, e := range syscallTable {
		if e.nr == nr {
			return e.name
		}
	}
	return ""
}

// ParseSyscalls parses a comma-separated list of x86_64 syscall names or
// decimal numbers (as given to --syscalls, e.g. "openat,connect,41") into
// syscall numbers, in order, without duplicates. Blank items are ignored. It
// returns an error wrapping ErrUnknownSyscall for an unknown name and
// ErrBadSyscall for a number the filter cannot route.
func ParseSyscalls(list string) ([]uint32, error) {
	var out []uint32
	seen := map[uint32]bool{}
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		nr, ok := SyscallNumber(item)
		if !ok {
			n, err := strconv.ParseUint(item, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: %q", ErrUnknownSyscall, item)
			}
			if n >= x32SyscallBit {
				return nil, fmt.Errorf("%w: %d", ErrBadSyscall, n)
			}
			nr = uint32(n)
		}
		if !seen[nr] {
			seen[nr] = true
			out = append(out, nr)
		}
	}
	return out, nil
}
