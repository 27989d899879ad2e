package state

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/sealed"
)

// HandoffEnv is the environment variable through which a daemon hands
// its Image to the binary it execs: the number of a sealed memfd holding
// EncodeImage's bytes.
const HandoffEnv = "BPFD_HANDOFF"

// ErrHandoff wraps failures to read a handed-over image.
var ErrHandoff = errors.New("state: cannot take over the handed-over state")

// Exec replaces the process with the program at path (argv, env), handing
// it img and every fd img.FDs names, which stay open across the exec at
// the same numbers (the image says which is which). It only returns on
// failure, with every fd back to close-on-exec and nothing else changed:
// the caller keeps running. The caller must have stopped everything that
// could close or open fds meanwhile.
func Exec(path string, argv, env []string, img *Image) error {
	b, err := EncodeImage(img)
	if err != nil {
		return err
	}
	mfd, err := sealed.Memfd("bpfd-handoff", b)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	var opened []int
	restore := func() {
		for _, fd := range opened {
			unix.CloseOnExec(fd)
		}
	}
	for _, fd := range append(fdList(img.FDs), mfd) {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			restore()
			return fmt.Errorf("state: handing over fd %d: %w", fd, os.NewSyscallError("fcntl(F_SETFD)", err))
		}
		opened = append(opened, fd)
	}
	env = append(withoutEnv(env, HandoffEnv, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"),
		HandoffEnv+"="+strconv.Itoa(mfd))
	err = syscall.Exec(path, argv, env)
	restore()
	return fmt.Errorf("state: exec %s: %w", path, err)
}

func fdList(m map[string]int) []int {
	out := make([]int, 0, len(m))
	for _, fd := range m {
		out = append(out, fd)
	}
	return out
}

// withoutEnv returns env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	out := make([]string, 0, len(env)+1)
next:
	for _, kv := range env {
		for _, n := range names {
			if len(kv) > len(n) && kv[:len(n)] == n && kv[len(n)] == '=' {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// TakeHandoff returns the image handed over by the process that exec'd
// this one (Exec), or nil, nil when there is none. It closes the memfd,
// makes every fd the image names close-on-exec, and unsets HandoffEnv.
// The caller owns those fds. Errors wrap ErrHandoff.
func TakeHandoff(getenv func(string) string) (*Image, error) {
	v := getenv(HandoffEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(HandoffEnv)
	mfd, err := strconv.Atoi(v)
	if err != nil || mfd < 0 {
		return nil, fmt.Errorf("%w: %s=%q", ErrHandoff, HandoffEnv, v)
	}
	defer unix.Close(mfd)
	var st unix.Stat_t
	if err := unix.Fstat(mfd, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandoff, err)
	}
	if st.Size > MaxImage+64 {
		return nil, fmt.Errorf("%w: image of %d bytes", ErrHandoff, st.Size)
	}
	b := make([]byte, st.Size)
	for off := 0; off < len(b); {
		n, err := unix.Pread(mfd, b[off:], int64(off))
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%w: reading the image: %v", ErrHandoff, err)
		}
		off += n
	}
	img, err := DecodeImage(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandoff, err)
	}
	for _, fd := range img.FDs {
		unix.CloseOnExec(fd)
	}
	return img, nil
}
