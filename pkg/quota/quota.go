// Package quota accounts the memory and object count each uid holds in the
// daemon, so that no client can exhaust the daemon's memory or descriptors.
// It lives apart from pkg/maps because programs and other objects are
// charged to the same per-uid budget.
//
// The daemon charges before creating an object (Charge with the object's
// size, e.g. maps.Spec.MemoryUsage) and releases exactly the same amount when
// the object is freed (Release). Errnos:
//
//   - ErrTooBig (E2BIG): one object larger than the uid's whole byte limit;
//     it could never fit, whatever the uid frees.
//   - ErrNoMemory (ENOMEM): the bytes would exceed what remains of the limit
//     (the kernel's answer when memcg refuses a map's memory).
//   - ErrTooMany (ENOSPC): the uid already holds its maximum number of objects.
package quota

import (
	"math"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Sentinel errors, each bound to its errno (errors.Is works for both).
var (
	ErrTooBig   = errno.New(unix.E2BIG, "quota: object larger than the uid's memory limit")
	ErrNoMemory = errno.New(unix.ENOMEM, "quota: uid memory limit reached")
	ErrTooMany  = errno.New(unix.ENOSPC, "quota: uid object limit reached")
)

// Unlimited as a Limits field means no limit.
const (
	UnlimitedBytes   = math.MaxUint64
	UnlimitedObjects = math.MaxUint32
)

// Defaults for a uid without an explicit entry.
const (
	DefaultMaxBytes   = 64 << 20
	DefaultMaxObjects = 1024
)

// Limits bounds one uid. A zero field means the default (DefaultMaxBytes,
// DefaultMaxObjects); use UnlimitedBytes / UnlimitedObjects for no limit.
type Limits struct {
	MaxBytes   uint64
	MaxObjects uint32
}

func (l Limits) withDefaults(d Limits) Limits {
	if l.MaxBytes == 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxObjects == 0 {
		l.MaxObjects = d.MaxObjects
	}
	return l
}

// Config configures a Quota. The zero Config (or nil) gives every uid,
// root included, the default limits.
type Config struct {
	// Default applies to every uid not in PerUID; zero fields mean the
	// package defaults.
	Default Limits
	// PerUID overrides Default for given uids (e.g. 0: unlimited root).
	// Zero fields fall back to Default's value. Copied by New.
	PerUID map[uint32]Limits
}

// Quota tracks per-uid usage. Safe for concurrent use; all state is guarded
// by mu.
type Quota struct {
	def    Limits
	perUID map[uint32]Limits
	mu     sync.Mutex
	used   map[uint32]Usage // guarded by mu; entries at zero are removed
}

// Usage is what a uid holds.
type Usage struct {
	Bytes   uint64
	Objects uint32
}

// New returns a Quota with cfg's limits; nil cfg means defaults.
func New(cfg *Config) *Quota {
	q := &Quota{
		def:    Limits{MaxBytes: DefaultMaxBytes, MaxObjects: DefaultMaxObjects},
		perUID: map[uint32]Limits{},
		used:   map[uint32]Usage{},
	}
	if cfg != nil {
		q.def = cfg.Default.withDefaults(q.def)
		for uid, l := range cfg.PerUID {
			q.perUID[uid] = l.withDefaults(q.def)
		}
	}
	return q
}

// Limits returns the limits that apply to uid.
func (q *Quota) Limits(uid uint32) Limits {
	if l, ok := q.perUID[uid]; ok {
		return l
	}
	return q.def
}

// Charge accounts one object of the given bytes to uid. On failure nothing
// is charged and the error is ErrTooBig, ErrNoMemory or ErrTooMany (see the
// package doc).
func (q *Quota) Charge(uid uint32, bytes uint64) error {
	l := q.Limits(uid)
	if bytes > l.MaxBytes {
		return ErrTooBig
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.used[uid]
	if u.Objects >= l.MaxObjects {
		return ErrTooMany
	}
	if bytes > l.MaxBytes-u.Bytes {
		return ErrNoMemory
	}
	u.Bytes += bytes
	u.Objects++
	q.used[uid] = u
	return nil
}

// Release returns one object of the given bytes, previously charged to uid.
// Releasing more than was charged clamps the usage at zero (a caller bug, but
// never a reason to corrupt other uids' accounting).
func (q *Quota) Release(uid uint32, bytes uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.used[uid]
	u.Bytes -= min(bytes, u.Bytes)
	if u.Objects > 0 {
		u.Objects--
	}
	if u == (Usage{}) {
		delete(q.used, uid)
		return
	}
	q.used[uid] = u
}

// Usage returns what uid currently holds.
func (q *Quota) Usage(uid uint32) Usage {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used[uid]
}
