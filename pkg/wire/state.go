package wire

// Daemon lifetime commands (bpfd's own; crash-proof state's range
// 0x190-0x19f; docs/persistence.md, "Upgrades").
const (
	// CmdDaemonUpgrade makes the daemon hand everything it holds —
	// listening socket, connections, descriptors, map storage, programs,
	// links, seccomp listeners — to a freshly executed binary at the same
	// path (attr: none, data: none). Only root or the daemon's own uid may
	// ask (EPERM); a daemon started without an executable to upgrade to
	// answers EOPNOTSUPP, one already upgrading EBUSY. The reply comes
	// from the new process once it serves: Ret = 0, data = JSON
	// UpgradeResult; if the new binary cannot be executed, the old process
	// goes on serving and answers with the exec's errno.
	CmdDaemonUpgrade Cmd = 0x190
	// CmdImportAt is CmdImport with the handle number chosen by the
	// client (attr ImportAtAttr): a client that reconnects after a daemon
	// restart presents its descriptors again under the handle numbers it
	// had, so requests it built before the restart stay right. EEXIST if
	// the number is in use on this connection, EINVAL for 0 or a number
	// beyond the connection's handle limit; otherwise as CmdImport.
	CmdImportAt Cmd = 0x191
)

func init() {
	cmdNames[CmdDaemonUpgrade] = "DAEMON_UPGRADE"
	cmdNames[CmdImportAt] = "IMPORT_AT"
}

// ImportAtAttr is CmdImportAt's attr (8 bytes): Mode as ImportAttr's,
// Handle the handle number wanted.
type ImportAtAttr struct {
	Mode   Mode
	Handle uint32
}

// ImportAtAttrSize is the encoded size of ImportAtAttr.
const ImportAtAttrSize = 8

// Append appends a's encoding to b.
func (a *ImportAtAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, uint32(a.Mode))
	return le.AppendUint32(b, a.Handle)
}

// Parse decodes a from a normalised attr.
func (a *ImportAtAttr) Parse(b []byte) bool {
	a.Mode = Mode(le.Uint32(b[0:]))
	a.Handle = le.Uint32(b[4:])
	return true
}

// UpgradeResult is CmdDaemonUpgrade's reply data (JSON).
type UpgradeResult struct {
	// FromVersion and ToVersion are the versions of the binary that
	// handed over and of the one that took over.
	FromVersion string `json:"from_version"`
	ToVersion   string `json:"to_version"`
	// PID is the daemon's pid (the same: exec keeps it).
	PID int `json:"pid"`
	// PauseNs is how long the daemon answered no request: from the
	// moment it stopped taking new ones to the moment the new process
	// served again.
	PauseNs int64 `json:"pause_ns"`
	// Objects, Descriptors and Conns are what the new process took over.
	Objects     int `json:"objects"`
	Descriptors int `json:"descriptors"`
	Conns       int `json:"conns"`
}
