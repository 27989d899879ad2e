package maps

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Redirect maps: BPF_MAP_TYPE_DEVMAP, DEVMAP_HASH, CPUMAP and XSKMAP,
// the targets of bpf_redirect_map in XDP programs. bpfd sends no packet
// anywhere (a test run returns the program's action, as the kernel's;
// what a redirect does on a live attachment is the links' business), so
// these maps are storage with the kernel's creation rules, update
// validation and errnos, as far as the checks mean anything in
// userspace:
//
//   - DEVMAP / DEVMAP_HASH values are struct bpf_devmap_val: the ifindex
//     (4 bytes) and, with value size 8, a program fd. The ifindex must
//     name an interface in the daemon's network namespace (the kernel
//     looks in the caller's: dev_get_by_index; EINVAL otherwise). An
//     array entry with ifindex 0 is empty (the kernel's NULL); a hash
//     refuses ifindex 0 (EINVAL). Like the kernel, creation adds
//     BPF_F_RDONLY_PROG to the flags: programs only read entries.
//   - CPUMAP values are struct bpf_cpumap_val: the queue size (at most
//     16384: EOVERFLOW; 0 empties the entry) and, with value size 8, a
//     program fd; the key must be a possible CPU of bpfd's slot pool
//     (ENODEV) below max_entries, and max_entries at most the kernel's
//     NR_CPUS (/sys/devices/system/cpu/kernel_max + 1; E2BIG).
//   - A program in a DEVMAP or CPUMAP entry (fd > 0) is refused with the
//     errno the kernel gives for an fd that is no suitable program
//     (DEVMAP: EINVAL; CPUMAP: ENOMEM): bpfd does not run programs on
//     redirected frames, and element commands carry no descriptors. A
//     lookup returns the program id 0, as the kernel with no program.
//   - XSKMAP values are AF_XDP socket fds. bpfd cannot hold AF_XDP
//     sockets (element commands carry no descriptors, and the socket's
//     rings belong to the kernel), so every update, after the kernel's
//     flag and index checks, fails with EOPNOTSUPP — the kernel's answer
//     for a socket that is not AF_XDP — and the map stays empty:
//     bpf_redirect_map on it always takes the fallback action. Syscall
//     lookups are EOPNOTSUPP as in the kernel; deletes succeed.

// Errors of the redirect maps.
var (
	// ErrOverflow is the kernel's EOVERFLOW for a CPU map queue size
	// above 16384.
	ErrOverflow = errno.New(unix.EOVERFLOW, "maps: cpumap queue size above 16384")
	// ErrNoDevice is ENODEV for a CPU map key that is no possible CPU.
	ErrNoDevice = errno.New(unix.ENODEV, "maps: not a possible CPU")
	// ErrNoInterface is EINVAL for a device map ifindex that names no
	// interface in the daemon's network namespace.
	ErrNoInterface = errno.New(unix.EINVAL, "maps: no network interface with this ifindex")
	// ErrEntryProg is the errno the kernel gives for a program fd in a
	// DEVMAP (EINVAL) entry that is no devmap program; see ErrCPUEntryProg.
	ErrEntryProg = errno.New(unix.EINVAL, "maps: programs in device map entries are not supported")
	// ErrCPUEntryProg is ENOMEM, the kernel's answer for a CPUMAP entry
	// whose program fd cannot be used.
	ErrCPUEntryProg = errno.New(unix.ENOMEM, "maps: programs in cpu map entries are not supported")
	// ErrNoXSK is EOPNOTSUPP for every XSKMAP update: bpfd cannot hold
	// AF_XDP sockets.
	ErrNoXSK = errno.New(unix.EOPNOTSUPP, "maps: bpfd cannot hold AF_XDP sockets")
)

// cpumapMaxQsize is the kernel's sanity limit on a CPU map queue.
const cpumapMaxQsize = 16384

// Redirect flags of bpf_redirect_map (BPF_F_*).
const (
	RedirectActionMask     uint64 = 3      // XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX: the fallback action
	RedirectBroadcast      uint64 = 1 << 3 // BPF_F_BROADCAST (device maps)
	RedirectExcludeIngress uint64 = 1 << 4 // BPF_F_EXCLUDE_INGRESS (device maps)
)

// Redirector is implemented by the redirect maps: the program side of
// bpf_redirect_map.
type Redirector interface {
	Map
	// RedirectTarget reports whether key names a target (a non-empty
	// entry). Program side: no permission checks.
	RedirectTarget(cpu int, key uint32) bool
}

var (
	_ Redirector = (*DevMap)(nil)
	_ Redirector = (*DevMapHash)(nil)
)

// IfindexExists reports whether ifindex names a network interface in the
// daemon's network namespace; device map updates use it. Tests may
// replace it before creating maps.
var IfindexExists = func(ifindex uint32) bool {
	_, err := net.InterfaceByIndex(int(ifindex))
	return err == nil
}

var (
	nrCPUsOnce sync.Once
	nrCPUsVal  uint32
)

// nrCPUs is the kernel's NR_CPUS: /sys/devices/system/cpu/kernel_max
// plus one, or 8192 (distribution kernels' CONFIG_NR_CPUS) if unknown.
func nrCPUs() uint32 {
	nrCPUsOnce.Do(func() {
		nrCPUsVal = 8192
		if b, err := os.ReadFile("/sys/devices/system/cpu/kernel_max"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil && n < 1<<20 {
				nrCPUsVal = uint32(n) + 1
			}
		}
	})
	return nrCPUsVal
}

// isRedirect reports whether t is a redirect map type.
func isRedirect(t uint32) bool {
	return t == TypeDevmap || t == TypeDevmapHash || t == TypeCPUMap || t == TypeXSKMap
}

// checkRedirect is the kernel's creation check of the redirect maps
// (dev_map_alloc_check, cpu_map_alloc, xsk_map_alloc). BPF_F_RDONLY_PROG
// passes for device maps because the kernel adds it (NewWith refuses it
// from the caller).
func (s Spec) checkRedirect() error {
	flags := FlagNumaNode | FlagRdonly | FlagWronly
	switch s.Type {
	case TypeDevmap, TypeDevmapHash:
		flags |= FlagRdonlyProg
		if s.ValueSize != 4 && s.ValueSize != 8 {
			return ErrInvalid
		}
	case TypeCPUMap:
		flags = FlagNumaNode
		if s.ValueSize != 4 && s.ValueSize != 8 {
			return ErrInvalid
		}
	case TypeXSKMap:
		if s.ValueSize != 4 {
			return ErrInvalid
		}
	}
	if s.MaxEntries == 0 || s.KeySize != 4 || s.Flags&^flags != 0 || !accessOK(s.Flags) {
		return ErrInvalid
	}
	if s.Type == TypeDevmapHash && s.MaxEntries > 1<<31 {
		return ErrInvalid // roundup_pow_of_two overflows: no buckets
	}
	if s.Type == TypeCPUMap && s.MaxEntries > nrCPUs() {
		return ErrTooBig
	}
	return nil
}

// DevMap is DEVMAP, CPUMAP and XSKMAP: array storage of the entries'
// values in the syscall layout (ifindex or queue size, then program id 0),
// all zero for an empty entry. See the file comment for what is checked.
// Safe for concurrent use.
type DevMap struct {
	*Array
}

// DevMapHash is DEVMAP_HASH: a hash of ifindex entries. Safe for
// concurrent use.
type DevMapHash struct {
	*Hash
}

// AsCreated returns s without the flags the kernel adds at creation
// (BPF_F_RDONLY_PROG on device maps), i.e. the spec to pass to New to
// make a map whose Spec() is s again (restoring a saved map).
func AsCreated(s Spec) Spec {
	if s.Type == TypeDevmap || s.Type == TypeDevmapHash {
		s.Flags &^= FlagRdonlyProg
	}
	return s
}

// checkEntry validates a device or CPU map value as the kernel's update
// does (after the flag and index checks) and returns the value to store
// (nil: empty the entry).
func checkEntry(typ uint32, cpu uint32, value []byte, out []byte) ([]byte, error) {
	first := ne.Uint32(value)
	prog := int32(0)
	if len(value) == 8 {
		prog = int32(ne.Uint32(value[4:]))
	}
	clear(out)
	switch typ {
	case TypeDevmap, TypeDevmapHash:
		if first == 0 {
			if typ == TypeDevmapHash || prog > 0 {
				return nil, ErrInvalid
			}
			return nil, nil
		}
		if !IfindexExists(first) {
			return nil, ErrNoInterface
		}
		if prog > 0 {
			return nil, ErrEntryProg
		}
	case TypeCPUMap:
		if first > cpumapMaxQsize {
			return nil, ErrOverflow
		}
		if int(cpu) >= defaultNCPU() {
			return nil, ErrNoDevice
		}
		if first == 0 {
			return nil, nil
		}
		if prog > 0 {
			return nil, ErrCPUEntryProg
		}
	}
	ne.PutUint32(out, first)
	return out, nil
}

// Lookup implements Map: the entry's value (program id 0); ErrKeyNotExist
// for an empty entry; XSKMAP: ErrOpNotSupp, as the kernel.
func (d *DevMap) Lookup(key, value []byte) error {
	if err := d.canRead(); err != nil {
		return err
	}
	if d.spec.Type == TypeXSKMap {
		return ErrOpNotSupp
	}
	if err := d.Array.Lookup(key, value); err != nil {
		return err
	}
	if ne.Uint32(value) == 0 {
		return ErrKeyNotExist
	}
	return nil
}

// Update implements Map with the kernel's order of checks: flags above
// UpdateExist (EINVAL), the index (E2BIG), UpdateNoExist (EEXIST: every
// entry exists), then the value (see the file comment).
func (d *DevMap) Update(key, value []byte, flags uint64) error {
	if err := d.canWrite(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != int(d.spec.ValueSize) {
		return ErrValueSize
	}
	if flags > UpdateExist {
		return ErrInvalidFlags
	}
	i := index(key)
	if i >= d.spec.MaxEntries {
		return ErrIndexRange
	}
	if d.spec.Type == TypeXSKMap {
		return ErrNoXSK
	}
	if flags == UpdateNoExist {
		return ErrKeyExist
	}
	var buf [8]byte
	v, err := checkEntry(d.spec.Type, i, value, buf[:d.spec.ValueSize])
	if err != nil {
		return err
	}
	if v == nil {
		v = buf[:d.spec.ValueSize]
	}
	return d.Array.ProgUpdate(key, v, UpdateAny)
}

// Delete implements Map: empties the entry; ErrInvalid for an index out
// of range, as the kernel (deleting an empty entry succeeds).
func (d *DevMap) Delete(key []byte) error {
	if err := d.canWrite(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if index(key) >= d.spec.MaxEntries {
		return ErrInvalid
	}
	var zero [8]byte
	return d.Array.ProgUpdate(key, zero[:d.spec.ValueSize], UpdateAny)
}

// LookupAndDelete implements Map: ErrNotSupported after the permission
// checks, as the kernel.
func (d *DevMap) LookupAndDelete(key, value []byte) error {
	if err := d.canRead(); err != nil {
		return err
	}
	if err := d.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// ValueRef implements Map: nil for an empty entry and for XSKMAP.
func (d *DevMap) ValueRef(key []byte) []byte { return d.ProgLookup(0, key) }

// ProgLookup implements Map: the entry (read-only for programs: the map
// has BPF_F_RDONLY_PROG), nil if empty; XSKMAP and CPUMAP entries are not
// data (nil).
func (d *DevMap) ProgLookup(cpu int, key []byte) []byte {
	if d.spec.Type != TypeDevmap {
		return nil
	}
	v := d.Array.ProgLookup(cpu, key)
	if v == nil || ne.Uint32(v) == 0 {
		return nil
	}
	return v
}

// ProgUpdate implements Map: ErrNotSupported (the verifier lets no
// program update a redirect map).
func (d *DevMap) ProgUpdate([]byte, []byte, uint64) error { return ErrNotSupported }

// ProgUpdateOn implements Map: ErrNotSupported.
func (d *DevMap) ProgUpdateOn(int, []byte, []byte, uint64) error { return ErrNotSupported }

// ProgDelete implements Map: ErrNotSupported.
func (d *DevMap) ProgDelete([]byte) error { return ErrNotSupported }

// ProgDeleteOn implements Map: ErrNotSupported.
func (d *DevMap) ProgDeleteOn(int, []byte) error { return ErrNotSupported }

// LookupBatch implements Map: ErrNotSupported (ENOTSUPP), as the
// kernel's redirect maps (no batch operations).
func (d *DevMap) LookupBatch(*Batch) error { return batchUnsupported(d.b(), true, false) }

// LookupAndDeleteBatch implements Map: ErrNotSupported.
func (d *DevMap) LookupAndDeleteBatch(*Batch) error { return batchUnsupported(d.b(), true, true) }

// UpdateBatch implements Map: ErrNotSupported.
func (d *DevMap) UpdateBatch(*Batch) error { return batchUnsupported(d.b(), false, true) }

// DeleteBatch implements Map: ErrNotSupported.
func (d *DevMap) DeleteBatch(*Batch) error { return batchUnsupported(d.b(), false, true) }

// RedirectTarget implements Redirector.
func (d *DevMap) RedirectTarget(_ int, key uint32) bool {
	if d.spec.Type == TypeXSKMap || key >= d.spec.MaxEntries || d.closed.Load() {
		return false
	}
	var k [4]byte
	ne.PutUint32(k[:], key)
	v := d.Array.ProgLookup(0, k[:])
	return v != nil && ne.Uint32(v) != 0
}

// Update implements Map: flags above UpdateExist and ifindex 0 are
// EINVAL; UpdateNoExist on a present key EEXIST; UpdateExist on an
// absent key creates it (the kernel does not check it); a full map E2BIG.
func (d *DevMapHash) Update(key, value []byte, flags uint64) error {
	if err := d.canWrite(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != int(d.spec.ValueSize) {
		return ErrValueSize
	}
	if flags > UpdateExist || ne.Uint32(value) == 0 {
		return ErrInvalid
	}
	if flags == UpdateNoExist && d.Hash.ProgLookup(0, key) != nil {
		return ErrKeyExist
	}
	var buf [8]byte
	v, err := checkEntry(d.spec.Type, 0, value, buf[:d.spec.ValueSize])
	if err != nil {
		return err
	}
	return d.withSlot(func(cpu int) error { return d.update(cpu, key, v, UpdateAny, true) })
}

// LookupAndDelete implements Map: ErrNotSupported, as the kernel.
func (d *DevMapHash) LookupAndDelete(key, value []byte) error {
	if err := d.canRead(); err != nil {
		return err
	}
	if err := d.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// ProgUpdate implements Map: ErrNotSupported.
func (d *DevMapHash) ProgUpdate([]byte, []byte, uint64) error { return ErrNotSupported }

// ProgUpdateOn implements Map: ErrNotSupported.
func (d *DevMapHash) ProgUpdateOn(int, []byte, []byte, uint64) error { return ErrNotSupported }

// ProgDelete implements Map: ErrNotSupported.
func (d *DevMapHash) ProgDelete([]byte) error { return ErrNotSupported }

// ProgDeleteOn implements Map: ErrNotSupported.
func (d *DevMapHash) ProgDeleteOn(int, []byte) error { return ErrNotSupported }

// LookupBatch implements Map: ErrNotSupported, as the kernel.
func (d *DevMapHash) LookupBatch(*Batch) error { return batchUnsupported(d.b(), true, false) }

// LookupAndDeleteBatch implements Map: ErrNotSupported.
func (d *DevMapHash) LookupAndDeleteBatch(*Batch) error { return batchUnsupported(d.b(), true, true) }

// UpdateBatch implements Map: ErrNotSupported.
func (d *DevMapHash) UpdateBatch(*Batch) error { return batchUnsupported(d.b(), false, true) }

// DeleteBatch implements Map: ErrNotSupported.
func (d *DevMapHash) DeleteBatch(*Batch) error { return batchUnsupported(d.b(), false, true) }

// RedirectTarget implements Redirector.
func (d *DevMapHash) RedirectTarget(cpu int, key uint32) bool {
	var k [4]byte
	ne.PutUint32(k[:], key)
	return d.Hash.ProgLookup(cpu, k[:]) != nil
}

// batchUnsupported is a batch command on a map type without batch
// operations: the permission checks, then ErrNotSupported.
func batchUnsupported(b *base, read, write bool) error {
	if read {
		if err := b.canRead(); err != nil {
			return err
		}
	}
	if write {
		if err := b.canWrite(); err != nil {
			return err
		}
	}
	return ErrNotSupported
}
