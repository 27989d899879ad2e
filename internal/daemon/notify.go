package daemon

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"
)

// Notifier sends sd_notify(3) state messages to the service manager over
// the datagram socket named by NOTIFY_SOCKET (a path, or an abstract
// address written with a leading '@'). A nil *Notifier does nothing, so
// callers need not check whether the daemon runs under systemd. Safe for
// concurrent use.
type Notifier struct {
	addr *net.UnixAddr
}

// NewNotifier returns a Notifier for NOTIFY_SOCKET from getenv, or nil
// when it is unset or not a Unix socket address.
func NewNotifier(getenv func(string) string) *Notifier {
	s := getenv("NOTIFY_SOCKET")
	if s == "" || (s[0] != '/' && s[0] != '@') {
		return nil
	}
	// net maps a leading '@' to the abstract namespace.
	return &Notifier{addr: &net.UnixAddr{Name: s, Net: "unixgram"}}
}

// Notify sends state (for example "READY=1" or "STOPPING=1"; several
// assignments are separated by newlines) in one datagram. It returns the
// dial or send error; a nil Notifier returns nil.
func (n *Notifier) Notify(state string) error {
	if n == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// ErrNoWatchdog: the service manager asked for no watchdog pings.
var ErrNoWatchdog = errors.New("watchdog not enabled")

// WatchdogInterval returns how often to send WATCHDOG=1: half of
// WATCHDOG_USEC, when that is set and WATCHDOG_PID is unset or equal to
// pid. Otherwise it returns ErrNoWatchdog.
func WatchdogInterval(getenv func(string) string, pid int) (time.Duration, error) {
	us, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || us == 0 {
		return 0, ErrNoWatchdog
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		if v, err := strconv.Atoi(p); err != nil || v != pid {
			return 0, ErrNoWatchdog
		}
	}
	return time.Duration(us) * time.Microsecond / 2, nil
}

// watchdog sends WATCHDOG=1 every interval while healthy() holds, until
// ctx ends. healthy is the liveness probe: a daemon that deadlocked stops
// pinging, and the service manager restarts it.
func (n *Notifier) watchdog(ctx context.Context, interval time.Duration, healthy func() bool, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !healthy() {
				continue
			}
			if err := n.Notify("WATCHDOG=1"); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}
