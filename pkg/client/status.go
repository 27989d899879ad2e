package client

import (
	"encoding/json"
	"time"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Status is a snapshot of the daemon's state, as the daemon reports it.
type Status struct {
	Objects     int         `json:"objects"`
	Maps        int         `json:"maps"`
	Connections int         `json:"connections"`
	Descriptors int         `json:"descriptors"`
	Pins        int         `json:"pins"` // live pins; each also counts as one of its maker's descriptors
	Handles     int64       `json:"handles"`
	MapMemory   uint64      `json:"map_memory"` // bytes
	UIDs        []UIDStatus `json:"uids,omitempty"`
	PinRoot     string      `json:"pin_root,omitempty"` // absolute; empty when pins are disabled
	Programs    int         `json:"programs"`
	Attachments int64       `json:"attachments"` // seccomp listeners being served
	Started     time.Time   `json:"started"`
	Uptime      float64     `json:"uptime_seconds"`
	// BulkSlots is how many bulk-lane turns (verifications, test runs,
	// large batches) the daemon runs at once; BulkSlice how long one runs
	// before it gives way to another uid's (seconds).
	BulkSlots int     `json:"bulk_slots"`
	BulkSlice float64 `json:"bulk_slice_seconds"`
	// Memory is every byte the daemon holds for clients (bytes);
	// MaxMemory its cap (beyond: ErrNoMemory); ReplyMemfds the reply
	// memfds handed out that are still open somewhere (each charged to
	// its uid until the last copy is closed).
	Memory      uint64 `json:"memory"`
	MaxMemory   uint64 `json:"max_memory"`
	ReplyMemfds int    `json:"reply_memfds"`
	// Seccomp are the caller's uid's seccomp attachments (every one for
	// uid 0) with their decision counters.
	Seccomp []SeccompAttachment `json:"seccomp,omitempty"`
}

// SeccompAttachment is a seccomp attachment (a filtered process tree whose
// routed syscalls a program decides) and its decisions.
type SeccompAttachment struct {
	ID         uint32            `json:"id"`
	ProgID     uint32            `json:"prog_id"`
	ProgName   string            `json:"prog_name"`
	UID        uint32            `json:"uid"`
	PID        int32             `json:"pid"`  // the client that attached it
	Comm       string            `json:"comm"` // its comm then
	AttachedAt time.Time         `json:"attached_at"`
	Routed     uint64            `json:"routed"`  // syscalls decided
	Allowed    uint64            `json:"allowed"` // SECCOMP_RET_ALLOW and LOG
	Denied     map[string]uint64 `json:"denied"`  // SECCOMP_RET_ERRNO, by errno name
	Killed     uint64            `json:"killed"`  // any other action
	Faults     uint64            `json:"faults"`  // program faults (denied with EPERM)
	RunTime    time.Duration     `json:"run_time_ns"`
}

// UIDStatus is one uid's consumption and quota.
type UIDStatus struct {
	UID         uint32 `json:"uid"`
	Objects     int    `json:"objects"`
	MapMemory   uint64 `json:"map_memory"`
	Descriptors int    `json:"descriptors"`
	Connections int    `json:"connections"`
	Quota       Quota  `json:"quota"`
	// Memory is every byte the daemon holds for the uid: map memory,
	// descriptors, connections, requests in flight, reply memfds still
	// open (bytes; beyond Quota.Memory: ErrNoMemory).
	Memory uint64 `json:"memory"`
	// BulkCPU is the CPU time (seconds) the uid's bulk-lane work used
	// since the daemon started; BulkRunning and BulkWaiting are its
	// turns holding and waiting for a slot.
	BulkCPU     float64 `json:"bulk_cpu_seconds,omitempty"`
	BulkRunning int     `json:"bulk_running,omitempty"`
	BulkWaiting int     `json:"bulk_waiting,omitempty"`
}

// Quota is what one uid may hold at once.
type Quota struct {
	MapMemory   uint64 `json:"map_memory"`  // bytes of maps and programs (beyond: ErrNoMemory)
	Memory      uint64 `json:"memory"`      // every byte the daemon holds for the uid (beyond: ErrNoMemory)
	Objects     int    `json:"objects"`     // live objects (beyond: ErrNoSpace)
	Descriptors int    `json:"descriptors"` // open descriptors (beyond: ErrNoSpace)
	Conns       int    `json:"conns"`       // simultaneous connections
}

// Status asks the daemon for a snapshot of its objects, connections,
// descriptors, memory and per-uid quotas. It returns ErrClosed if c is
// closed and an error wrapping the decoding failure for a malformed reply.
func (c *Conn) Status() (Status, error) {
	var st Status
	if err := c.callPayload(wire.CmdStatus, nil, func(data []byte) error {
		if err := json.Unmarshal(data, &st); err != nil {
			return &statusError{err}
		}
		return nil
	}); err != nil {
		return Status{}, err
	}
	return st, nil
}

type statusError struct{ err error }

func (e *statusError) Error() string { return "bpfd: malformed status reply: " + e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }
