package demux

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// ErrPinNotPersistable: OBJ_PIN of a map of maps (or of a program using
// one) on a daemon that keeps pinned objects across restarts. Their
// entries are references to other maps, which neither the state
// directory nor the journal records yet: a pin would promise a survival
// bpfd cannot keep, so it is refused (EOPNOTSUPP) rather than come back
// empty or wrong after a crash (docs/persistence.md).
var ErrPinNotPersistable = errno.New(unix.EOPNOTSUPP,
	"demux: maps of maps (and programs using them) cannot be pinned on a daemon that persists pins: their entries would not survive a restart")

// pinnable reports whether o may be pinned: everything but maps of maps
// and programs using them when the server persists pins.
func (s *Server) pinnable(o *Object) error {
	if s.cfg.Persister == nil {
		return nil
	}
	if o.m != nil && isMapInMapSpec(o.spec) {
		return ErrPinNotPersistable
	}
	if o.p != nil {
		for _, dep := range o.deps {
			if dep.m != nil && isMapInMapSpec(dep.spec) {
				return ErrPinNotPersistable
			}
		}
	}
	return nil
}
