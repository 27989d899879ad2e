package interp

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Load-time sentinels. Load wraps them in a *LoadError naming the instruction.
var (
	// ErrInvalidInsn reports an instruction that is not valid RFC 9669
	// (unknown opcode, reserved field not zero, bad register, bad jump
	// target, truncated LD_IMM64).
	ErrInvalidInsn = errno.New(unix.EINVAL, "invalid instruction")
	// ErrUnknownHelper reports a call to a helper number with no HelperFunc
	// registered in Config.Helpers.
	ErrUnknownHelper = errno.New(unix.EINVAL, "unknown helper")
	// ErrProgramSize reports an empty program, a length that is not a
	// multiple of 8, or more than MaxInsns instructions.
	ErrProgramSize = errno.New(unix.EINVAL, "invalid program size")
	// ErrConfig reports an unusable Config (too many or too large static
	// regions, a helper number out of range).
	ErrConfig = errno.New(unix.EINVAL, "invalid interpreter config")
)

// Run-time sentinels, matched by errors.Is on the *Fault that Run returns.
var (
	// ErrOutOfBounds: a load, store or atomic outside every region.
	ErrOutOfBounds = errno.New(unix.EFAULT, "memory access out of bounds")
	// ErrReadOnly: a store or atomic into a read-only region.
	ErrReadOnly = errno.New(unix.EACCES, "write to read-only memory")
	// ErrWriteOnly: a load, fetching atomic or helper read of a region
	// the program may not read (write-only).
	ErrWriteOnly = errno.New(unix.EACCES, "read of write-only memory")
	// ErrBudget: the run executed more instructions than its budget.
	ErrBudget = errno.New(unix.ELOOP, "instruction budget exhausted")
	// ErrCallDepth: a bpf-to-bpf call beyond MaxFrames frames.
	ErrCallDepth = errno.New(unix.E2BIG, "call stack too deep")
	// ErrFallOff: execution ran past the last instruction.
	ErrFallOff = errno.New(unix.EINVAL, "execution fell off the end of the program")
	// ErrBadCall: callx with a register value that names no helper.
	ErrBadCall = errno.New(unix.EINVAL, "call to unknown helper")
	// ErrHelper: a helper returned an error; Fault.Err holds it.
	ErrHelper = errno.New(unix.EINVAL, "helper failed")
	// ErrRegionLimit: more dynamic regions than the VM allows.
	ErrRegionLimit = errno.New(unix.ENOMEM, "too many memory regions")
	// ErrArgs: Run was given more than five arguments.
	ErrArgs = errno.New(unix.EINVAL, "too many arguments")
	// ErrInternal: the interpreter or a helper panicked; this is a bug.
	ErrInternal = errno.New(unix.EFAULT, "internal interpreter error")
)

// LoadError is returned by Load for a program it refuses. Err is one of the
// load-time sentinels; errors.Is works through LoadError.
type LoadError struct {
	PC     int    // raw instruction index, -1 when not about one instruction
	Reason string // human-readable detail
	Err    error  // sentinel
}

func (e *LoadError) Error() string {
	if e.PC < 0 {
		return fmt.Sprintf("%v: %s", e.Err, e.Reason)
	}
	return fmt.Sprintf("insn %d: %v: %s", e.PC, e.Err, e.Reason)
}

// Unwrap returns the sentinel.
func (e *LoadError) Unwrap() error { return e.Err }

// FaultCode classifies a run-time fault.
type FaultCode uint8

// Fault codes; each has the sentinel named in its comment.
const (
	FaultOutOfBounds FaultCode = iota + 1 // ErrOutOfBounds
	FaultReadOnly                         // ErrReadOnly
	FaultBudget                           // ErrBudget
	FaultCallDepth                        // ErrCallDepth
	FaultFallOff                          // ErrFallOff
	FaultBadCall                          // ErrBadCall
	FaultHelper                           // ErrHelper
	FaultRegionLimit                      // ErrRegionLimit
	FaultInternal                         // ErrInternal
	FaultWriteOnly                        // ErrWriteOnly
)

var faultSentinels = [...]error{
	FaultOutOfBounds: ErrOutOfBounds,
	FaultReadOnly:    ErrReadOnly,
	FaultBudget:      ErrBudget,
	FaultCallDepth:   ErrCallDepth,
	FaultFallOff:     ErrFallOff,
	FaultBadCall:     ErrBadCall,
	FaultHelper:      ErrHelper,
	FaultRegionLimit: ErrRegionLimit,
	FaultInternal:    ErrInternal,
	FaultWriteOnly:   ErrWriteOnly,
}

// Sentinel returns the sentinel error for c (nil for an unknown code).
func (c FaultCode) Sentinel() error {
	if int(c) < len(faultSentinels) {
		return faultSentinels[c]
	}
	return nil
}

// Fault is the error Run returns when a program stops abnormally. It is a
// value: the VM does not keep or reuse it.
type Fault struct {
	Code  FaultCode
	PC    int    // raw index of the faulting instruction
	Addr  uint64 // memory faults: the address accessed; callx: the register value
	Size  int    // memory faults: access size in bytes
	Write bool   // memory faults: store or atomic
	Err   error  // FaultHelper: the helper's error; FaultInternal: the panic
}

func (f *Fault) Error() string {
	switch f.Code {
	case FaultOutOfBounds, FaultReadOnly, FaultWriteOnly:
		kind := "read"
		if f.Write {
			kind = "write"
		}
		return fmt.Sprintf("pc %d: %v: %s of %d bytes at %#x", f.PC, f.Code.Sentinel(), kind, f.Size, f.Addr)
	case FaultBadCall:
		return fmt.Sprintf("pc %d: %v %d", f.PC, f.Code.Sentinel(), f.Addr)
	case FaultHelper, FaultInternal:
		return fmt.Sprintf("pc %d: %v: %v", f.PC, f.Code.Sentinel(), f.Err)
	}
	return fmt.Sprintf("pc %d: %v", f.PC, f.Code.Sentinel())
}

// Unwrap returns the code's sentinel and, when set, Err.
func (f *Fault) Unwrap() []error {
	if f.Err != nil {
		return []error{f.Code.Sentinel(), f.Err}
	}
	return []error{f.Code.Sentinel()}
}
