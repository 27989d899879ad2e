package client

import (
	"encoding/json"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// UpgradeResult is what a daemon upgrade reports (Conn.UpgradeDaemon):
// the versions handed over between, the pid, the pause and what the new
// process took over (wire.UpgradeResult documents each field).
type UpgradeResult = wire.UpgradeResult

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
