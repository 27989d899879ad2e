package demux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// BTF objects (BTF_LOAD, as the kernel's BPF_BTF_LOAD): type information a
// client loads once and names when it creates maps (key and value types)
// and loads programs. A map or program holds a reference on its BTF object
// and reports its id; BTF_GET hands the raw BTF back to whoever holds a
// handle of the map, so tools print keys and values as types (bpfctl map
// dump). The daemon parses BTF with cilium/ebpf's btf package and checks
// that the named types exist and have the map's key and value sizes; it
// never interprets map contents itself.
//
// Differences from the kernel: BTF is parsed by cilium/ebpf's reader,
// which accepts what clang emits and what cilium/ebpf's Builder writes;
// the kernel's stricter per-kind checks (e.g. on DATASEC layouts, func
// linkage, bitfield encodings) are not repeated, since bpfd never relies
// on BTF for safety: the verifier ignores it. A BTF descriptor has read
// mode only (reading the types is all it grants).

// BTF errors.
var (
	ErrBTF        = errno.New(unix.EINVAL, "demux: malformed BTF")
	ErrBTFType    = errno.New(unix.EINVAL, "demux: BTF type id missing, or of the wrong size for the map's key or value")
	ErrNotBTF     = errno.New(unix.EINVAL, "demux: handle does not name a BTF object")
	ErrBTFTooBig  = errno.New(unix.E2BIG, "demux: BTF larger than wire.MaxBTFSize")
	ErrNoBTF      = errno.New(unix.ENOENT, "demux: the object has no BTF")
	errBTFUnknown = errors.New("demux: BTF parser failed")
)

// btfBlob is a loaded BTF object's content. Immutable.
type btfBlob struct {
	raw  []byte
	spec *btf.Spec
}

// btfRef is the BTF a map or program was created with: a reference on
// the BTF object (released when the map or program dies), and a map's key
// and value type ids. Immutable once the object is registered.
type btfRef struct {
	obj        *Object
	key, value uint32
}

// btfMagic starts a raw BTF blob (struct btf_header.magic, little-endian).
const btfMagic = 0xeb9f

// parseBTF parses an untrusted raw BTF blob. A panic in the parser is an
// invalid blob, never a daemon crash.
func parseBTF(raw []byte) (spec *btf.Spec, err error) {
	if len(raw) < 24 || binary.LittleEndian.Uint16(raw) != btfMagic {
		return nil, ErrBTF
	}
	defer func() {
		if r := recover(); r != nil {
			spec, err = nil, fmt.Errorf("%w: %v", ErrBTF, errBTFUnknown)
		}
	}()
	spec, err = btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBTF, err)
	}
	return spec, nil
}

// btfMemory is what a BTF object is charged: its bytes and the parsed
// types (about twice their size).
func btfMemory(raw []byte) uint64 { return 3 * uint64(len(raw)) }

// btfLoad executes CmdBTFLoad.
func (c *conn) btfLoad(a, data []byte) (int64, error) {
	var at wire.BTFLoadAttr
	if !at.Parse(a) || at.Flags != 0 || len(data) == 0 {
		return 0, ErrInvalid
	}
	if len(data) > wire.MaxBTFSize {
		return 0, ErrBTFTooBig
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	raw := append([]byte(nil), data...) // data may be a memfd unmapped after the request
	spec, err := parseBTF(raw)
	if err != nil {
		return 0, err
	}
	mem := btfMemory(raw)
	r := c.reg
	r.mu.Lock()
	if err := r.reserveNewLocked(c.uid, mem); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	r.mu.Unlock()
	o := &Object{kind: wire.ObjBTF, cap: wire.ModeRead, mem: mem, btf: &btfBlob{raw: raw, spec: spec}}
	return c.install(o, nil)
}

// btfOf resolves the BTF handle of a create or load (0: none) and checks
// the key and value type ids (for maps: want sizes key and value; 0 ids
// for programs). The returned ref does not hold a reference yet: take it
// with holdBTFLocked.
func (c *conn) btfOf(handle, keyID, valueID, keySize, valueSize uint32, isMap bool) (btfRef, error) {
	if handle == 0 {
		if keyID != 0 || valueID != 0 {
			return btfRef{}, ErrBTFType
		}
		return btfRef{}, nil
	}
	hd, err := c.lookup(handle)
	if err != nil {
		return btfRef{}, err
	}
	if hd.obj.btf == nil {
		return btfRef{}, ErrNotBTF
	}
	if isMap {
		spec := hd.obj.btf.spec
		check := func(id, size uint32, optional bool) error {
			if id == 0 && optional {
				return nil
			}
			t, err := spec.TypeByID(btf.TypeID(id))
			if err != nil {
				return ErrBTFType
			}
			n, err := btf.Sizeof(t)
			if err != nil || n != int(size) {
				return ErrBTFType
			}
			return nil
		}
		// As the kernel: the value type is required, a key type may be
		// left out (0).
		if err := check(keyID, keySize, true); err != nil {
			return btfRef{}, err
		}
		if err := check(valueID, valueSize, false); err != nil {
			return btfRef{}, err
		}
	}
	return btfRef{obj: hd.obj, key: keyID, value: valueID}, nil
}

// holdBTFLocked makes o hold ref's BTF object. r.mu must be held; it fails
// if the BTF object died since btfOf.
func (r *registry) holdBTFLocked(o *Object, ref btfRef) error {
	if ref.obj == nil {
		return nil
	}
	if ref.obj.refs == 0 {
		return ErrBadHandle
	}
	ref.obj.refs++
	o.btfRef = ref
	return nil
}

// btfInfo fills the BTF fields of i for o.
func (o *Object) btfInfo(i *wire.ObjInfo) {
	switch {
	case o.btf != nil:
		i.BTFID = o.id
	case o.btfRef.obj != nil:
		i.BTFID, i.BTFKeyTypeID, i.BTFValueTypeID = o.btfRef.obj.id, o.btfRef.key, o.btfRef.value
		i.SpinLock = o.spec.SpinLock // found in the value's BTF (spinlock.go)
	}
}

// btfGet executes CmdBTFGet: the raw BTF of the handle's object.
func (c *conn) btfGet(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	hd, err := c.lookup(h)
	if err != nil {
		return 0, err
	}
	o := hd.obj
	if o.btf == nil {
		o = o.btfRef.obj
	}
	if o == nil || o.btf == nil {
		return 0, ErrNoBTF
	}
	copy(c.alloc(len(o.btf.raw)), o.btf.raw)
	return int64(o.id), nil
}

// pinnedBTF is o's BTF for its persisted record (nil if none).
func (o *Object) pinnedBTF() *PinnedBTF {
	b := o.btfRef
	if b.obj == nil {
		return nil
	}
	return &PinnedBTF{Raw: b.obj.btf.raw, KeyTypeID: b.key, ValueTypeID: b.value}
}

// restoreBTF gives a restored map o (registered, without references yet)
// the BTF of its record: a new BTF object charged to owner, held by o
// only. The type ids are checked against the map's sizes as at creation.
func (s *Server) restoreBTF(o *Object, owner uint32, pb *PinnedBTF) error {
	spec, err := parseBTF(pb.Raw)
	if err != nil {
		return err
	}
	bo := &Object{kind: wire.ObjBTF, cap: wire.ModeRead, mem: btfMemory(pb.Raw), btf: &btfBlob{raw: pb.Raw, spec: spec}}
	check := func(id, size uint32) bool {
		if id == 0 {
			return true
		}
		t, err := spec.TypeByID(btf.TypeID(id))
		if err != nil {
			return false
		}
		n, err := btf.Sizeof(t)
		return err == nil && n == int(size)
	}
	if !check(pb.KeyTypeID, o.spec.KeySize) || pb.ValueTypeID == 0 || !check(pb.ValueTypeID, o.spec.ValueSize) {
		return ErrBTFType
	}
	r := s.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.reserveLocked(owner, bo.mem); err != nil {
		return err
	}
	if err := r.addObjectLocked(bo, owner); err != nil {
		r.unreserveLocked(owner, bo.mem)
		return err
	}
	bo.refs = 1 // o's
	o.btfRef = btfRef{obj: bo, key: pb.KeyTypeID, value: pb.ValueTypeID}
	return nil
}
