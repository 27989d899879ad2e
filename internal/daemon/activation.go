package daemon

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is SD_LISTEN_FDS_START: the first passed fd.
const listenFDsStart = 3

// ErrActivation: LISTEN_FDS names fds, but none is a listening
// SOCK_SEQPACKET Unix socket.
var ErrActivation = errors.New("socket activation: no listening AF_UNIX SOCK_SEQPACKET socket among the passed fds")

// ActivationListener returns the listening socket passed by socket
// activation (systemd's sd_listen_fds protocol: LISTEN_PID equal to pid,
// LISTEN_FDS fds from 3 on, optional LISTEN_FDNAMES), or nil, nil when the
// environment passes none to this process. With several fds it takes the
// one named "bpfd.socket" or "bpfd" if names are given, else the first
// suitable one. The chosen fd must be a listening AF_UNIX SOCK_SEQPACKET
// socket (ErrActivation otherwise). Every passed fd is made close-on-exec;
// the chosen one is owned by the returned listener (which does not unlink
// the socket file on Close: the service manager owns it), the others are
// closed.
func ActivationListener(getenv func(string) string, pid int) (*net.UnixListener, error) {
	lp := getenv("LISTEN_PID")
	if lp == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(lp); err != nil || p != pid {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	if n > 1024 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%d is implausible", n)
	}
	var names []string
	if s := getenv("LISTEN_FDNAMES"); s != "" {
		names = strings.Split(s, ":")
	}
	for i := range n {
		unix.CloseOnExec(listenFDsStart + i)
	}
	chosen := -1
	for i := range n {
		if i < len(names) && (names[i] == "bpfd.socket" || names[i] == "bpfd") && isSeqpacketListener(listenFDsStart+i) {
			chosen = listenFDsStart + i
			break
		}
	}
	if chosen < 0 {
		for i := range n {
			if isSeqpacketListener(listenFDsStart + i) {
				chosen = listenFDsStart + i
				break
			}
		}
	}
	for i := range n {
		if fd := listenFDsStart + i; fd != chosen {
			unix.Close(fd)
		}
	}
	if chosen < 0 {
		return nil, ErrActivation
	}
	ul, err := fileListener(chosen)
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	return ul, nil
}

// isSeqpacketListener reports whether fd is a listening AF_UNIX
// SOCK_SEQPACKET socket.
func isSeqpacketListener(fd int) bool {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || dom != unix.AF_UNIX {
		return false
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		return false
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && acc == 1
}
