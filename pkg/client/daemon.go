package client

import (
	"encoding/json"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// UpgradeResult is what a daemon upgrade reports (Conn.UpgradeDaemon).
type UpgradeResult struct {
	// FromVersion and ToVersion are the versions of the binary that
	// handed over and of the one that took over.
	FromVersion string `json:"from_version"`
	ToVersion   string `json:"to_version"`
	// PID is the daemon's pid (an upgrade keeps it).
	PID int `json:"pid"`
	// PauseNs is how long the daemon answered no request (nanoseconds).
	PauseNs int64 `json:"pause_ns"`
	// Objects, Descriptors and Conns are what the new process took over.
	Objects     int `json:"objects"`
	Descriptors int `json:"descriptors"`
	Conns       int `json:"conns"`
}

// UpgradeDaemon makes the daemon hand everything it holds — listening
// socket, connections (this one included), descriptors, map storage,
// programs, links, seccomp listeners — to a freshly executed binary at
// the path it was started from, and returns what the new process reports
// once it serves. Nothing else changes for any client: requests made
// meanwhile wait and are answered by the new process. It needs root or
// the daemon's own uid (ErrPermission); ErrNotSupported when the daemon
// cannot upgrade itself, ErrBusy during another upgrade; if the new
// binary cannot be executed, the daemon serves on and the exec's errno
// is returned.
func (c *Conn) UpgradeDaemon() (UpgradeResult, error) {
	var res UpgradeResult
	err := c.callPayload(wire.CmdDaemonUpgrade, nil, func(data []byte) error {
		if err := json.Unmarshal(data, &res); err != nil {
			return errProtocol
		}
		return nil
	})
	return res, err
}
