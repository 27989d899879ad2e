package demux

import (
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/state"
)

// Quota is what one uid may hold at once. A zero field means "use the
// default" when the Quota comes from Config (see Config.quotaFor).
type Quota struct {
	// MapMemory caps the bytes of object storage the uid's objects
	// occupy: maps (maps.Map.MemoryUsage) and programs (instructions,
	// decoded code, line info, kept verifier log). Exceeding it: ENOMEM.
	MapMemory uint64 `json:"map_memory"`
	// Memory caps every byte the daemon holds for the uid: object
	// storage, descriptors, connections (buffers, handle tables),
	// requests and replies in flight, reply memfds until the last copy
	// anywhere is closed, verifier state. Exceeding it: ENOMEM. Zero
	// (in a Config quota): MapMemory plus the default's headroom
	// (Memory − MapMemory of the package default).
	Memory uint64 `json:"memory"`
	// Objects caps the number of live objects the uid owns. Exceeding it:
	// ENOSPC.
	Objects int `json:"objects"`
	// Descriptors caps the descriptors made for the uid's connections that
	// are still open somewhere (each costs the daemon one fd). Exceeding
	// it: ENOSPC.
	Descriptors int `json:"descriptors"`
	// Conns caps the uid's simultaneous connections; further connections
	// are closed at once (and logged at warn).
	Conns int `json:"conns"`
}

// Default quotas.
var (
	// DefaultQuota applies to every uid without an entry in Config.Quotas,
	// except root.
	DefaultQuota = Quota{MapMemory: 256 << 20, Memory: 320 << 20, Objects: 1024, Descriptors: 4096, Conns: 256}
	// DefaultRootQuota applies to uid 0 without an entry in Config.Quotas.
	DefaultRootQuota = Quota{MapMemory: 4 << 30, Memory: 4<<30 + 512<<20, Objects: 65536, Descriptors: 32768, Conns: 4096}
)

// Default daemon-wide limits.
const (
	// DefaultMaxHandles is the default cap on handles per connection.
	DefaultMaxHandles = 4096
	// DefaultMaxConns is the default cap on connections.
	DefaultMaxConns = 4096
	// DefaultMaxDescriptors is the default cap on live descriptors in the
	// whole daemon (lowered to fit RLIMIT_NOFILE by NewServer).
	DefaultMaxDescriptors = 1 << 18
)

// Config configures a Server. A nil *Config, and every zero field, means
// the default. Nothing here needs privilege: the daemon may run as any user,
// and then serves that user's clients (and anyone who can connect).
type Config struct {
	// Logger receives connection events at debug and failures at warn.
	// Nil: zap.NewNop().
	Logger *zap.Logger
	// Version is reported by CmdHello. Empty: "dev".
	Version string
	// DefaultQuota applies to uids without an entry in Quotas (zero:
	// package DefaultQuota). RootQuota applies to uid 0 (zero:
	// DefaultRootQuota). Zero fields inside them take the package default's
	// field.
	DefaultQuota Quota
	RootQuota    Quota
	// Quotas overrides the quota per uid.
	Quotas map[uint32]Quota
	// MaxHandles caps handles per connection (EMFILE beyond).
	MaxHandles int
	// MaxConns caps connections daemon-wide.
	MaxConns int
	// MaxMemory caps the memory the daemon holds for all uids together
	// (the sum of what Quota.Memory counts): past it, requests that need
	// more fail with ENOMEM and new connections are closed, before the
	// kernel's OOM killer has a reason to act. Zero: DefaultMaxMemory().
	MaxMemory uint64
	// MaxDescriptors caps live descriptors daemon-wide (ENOSPC beyond). It
	// is lowered to leave room under RLIMIT_NOFILE.
	MaxDescriptors int
	// PinRoot is the directory pin files live under (created 01777 if
	// missing). Empty: pins are disabled and OBJ_PIN, OBJ_GET and
	// PIN_MKDIR answer EOPNOTSUPP. Creating pins as their caller (owner,
	// permission checks) needs root (setfsuid); otherwise files are made
	// with the daemon's own identity.
	PinRoot string
	// Sched configures the bulk lane's scheduler (pkg/sched): how many
	// verifications, test runs and large batches run at once (default
	// GOMAXPROCS−1, at least 1) and the slice after which one gives way
	// to another uid's. The zero value means the defaults.
	Sched sched.Config
	// RuntimeDir, if not empty, is where map storage lives — one region
	// file per map, mapped MAP_SHARED, so that a crash of the daemon
	// loses no store — and where the registry's journal is kept (package
	// state). Put it on tmpfs (/run): it must outlive the process, not
	// the machine. The daemon needs write access; it makes no directory.
	// Empty: memfd storage, nothing survives the process but what
	// Persister saves.
	RuntimeDir string
	// FDStore, if not nil, keeps the daemon's ends of descriptors,
	// seccomp listeners and netfilter queue sockets in systemd's fd
	// store, so that they survive a crash (needs RuntimeDir for the
	// journal that says what they are).
	FDStore *state.FDStore
	// Upgrade, if not nil, is what CmdDaemonUpgrade runs (on a goroutine
	// of its own): the daemon's Handoff, exec of the new binary and, if
	// that fails, Resume. Nil: CmdDaemonUpgrade answers EOPNOTSUPP.
	Upgrade func() error
	// Persister, if not nil, durably records pinned objects (see
	// Persister): synchronously when a pin is made or removed, and for
	// every pinned object at Shutdown. Nil: pins last as long as the
	// daemon.
	Persister Persister
}

func fill(q, def Quota) Quota {
	if q.Memory == 0 {
		if q.MapMemory == 0 {
			q.Memory = def.Memory
		} else {
			// The default's headroom above object storage.
			q.Memory = q.MapMemory + (def.Memory - min(def.Memory, def.MapMemory))
		}
	}
	if q.MapMemory == 0 {
		q.MapMemory = min(def.MapMemory, q.Memory)
	}
	if q.Objects == 0 {
		q.Objects = def.Objects
	}
	if q.Descriptors == 0 {
		q.Descriptors = def.Descriptors
	}
	if q.Conns == 0 {
		q.Conns = def.Conns
	}
	return q
}

// quotaFor returns uid's effective quota.
func (c *Config) quotaFor(uid uint32) Quota {
	def := fill(c.DefaultQuota, DefaultQuota)
	if uid == 0 {
		def = fill(c.RootQuota, DefaultRootQuota)
	}
	if q, ok := c.Quotas[uid]; ok {
		return fill(q, def)
	}
	return def
}

// Sentinel errors of the server. Each matches its errno with errors.Is and
// is what travels on the wire.
var (
	ErrBadHandle      = errno.New(unix.EBADF, "demux: bad handle")
	ErrBadDescriptor  = errno.New(unix.EBADF, "demux: not a bpfd descriptor")
	ErrPermission     = errno.New(unix.EPERM, "demux: operation not permitted by this handle's mode")
	ErrInvalid        = errno.New(unix.EINVAL, "demux: invalid argument")
	ErrUnknownCmd     = errno.New(unix.EINVAL, "demux: unknown command")
	ErrAttrTail       = errno.New(unix.E2BIG, "demux: non-zero attr bytes beyond this version")
	ErrDataLen        = errno.New(unix.EINVAL, "demux: data length does not match the map's key/value size")
	ErrFDs            = errno.New(unix.EINVAL, "demux: wrong number of fds for this command")
	ErrMemfd          = errno.New(unix.EINVAL, "demux: request memfd is not a sealed memfd of the stated size")
	ErrTooLarge       = errno.New(unix.E2BIG, "demux: attr or data length exceeds a protocol limit")
	ErrMsgSize        = errno.New(unix.EMSGSIZE, "demux: request larger than wire.MaxMessage")
	ErrQuotaMemory    = errno.New(unix.ENOMEM, "demux: map memory quota exceeded")
	ErrQuotaObjects   = errno.New(unix.ENOSPC, "demux: object quota exceeded")
	ErrQuotaDescs     = errno.New(unix.ENOSPC, "demux: descriptor quota exceeded")
	ErrTooManyHandles = errno.New(unix.EMFILE, "demux: too many handles on this connection")
	ErrIDsExhausted   = errno.New(unix.ENOSPC, "demux: object ids exhausted")
	ErrNotRevocable   = errno.New(unix.EINVAL, "demux: only a descriptor made by REOPEN can be revoked")
	ErrNotMaker       = errno.New(unix.EPERM, "demux: only the handle made with a descriptor may revoke it")
	ErrServerClosed   = errno.New(unix.ESHUTDOWN, "demux: server closed")
)
