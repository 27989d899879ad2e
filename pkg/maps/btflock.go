package maps

import (
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Finding a map value's struct bpf_spin_lock in its BTF, as the kernel's
// btf_parse_fields does for map_check_btf: the value type (typedefs and
// qualifiers resolved, as btf_type_id_size) must be a struct or a
// DATASEC; its members are searched, arrays flattened and nested
// structs entered (at most maxResolveDepth levels), for a member whose
// type is named "bpf_spin_lock" — the name of the member's own type, not
// resolved through typedefs. Such a member counts only if that type is a
// 4-byte struct at a 4-byte aligned offset and not in an array of more
// than one element; unions are not searched; a second lock at the same
// level is E2BIG, and where nesting hides the second the first one found
// is the lock (what kernel 6.18 answers for each shape is in
// pkg/client's TestSpinLockCreateVsKernel).

// maxResolveDepth is the kernel's MAX_RESOLVE_DEPTH.
const maxResolveDepth = 32

// Spin lock BTF errors (the kernel's errnos for the same BTF).
var (
	ErrLockTwice   = errno.New(unix.E2BIG, "maps: the value's BTF holds more than one bpf_spin_lock")
	ErrLockNesting = errno.New(unix.E2BIG, "maps: the value's BTF nests types too deeply")
	ErrLockOverlap = errno.New(unix.EEXIST, "maps: bpf_spin_lock fields of the value's BTF overlap")
)

// SpinLockOf returns Spec.SpinLock for a map whose value type is value:
// one more than the offset of its struct bpf_spin_lock, or 0 for none.
// It returns ErrLockTwice (E2BIG), ErrLockNesting (E2BIG) or
// ErrLockOverlap (EEXIST) where the kernel refuses the type.
func SpinLockOf(value btf.Type) (uint32, error) {
	if value == nil {
		return 0, nil
	}
	var offs []uint32
	var err error
	switch t := btf.UnderlyingType(value).(type) {
	case *btf.Struct:
		offs, err = lockFields(t.Members, 0)
	case *btf.Datasec:
		var seen bool
		for _, v := range t.Vars {
			vt := v.Type
			if vr, ok := vt.(*btf.Var); ok {
				vt = vr.Type
			}
			var o []uint32
			o, err = lockField(vt, v.Offset, v.Size, &seen, 0)
			if err != nil {
				break
			}
			offs = append(offs, o...)
		}
	}
	if err != nil || len(offs) == 0 {
		return 0, err
	}
	for i := 1; i < len(offs); i++ {
		if offs[i] < offs[i-1]+4 && offs[i]+4 > offs[i-1] {
			return 0, ErrLockOverlap
		}
	}
	return offs[0] + 1, nil
}

// lockFields is btf_find_struct_field: the spin locks among members
// (offsets relative to the struct), each level with its own seen flag.
func lockFields(members []btf.Member, level int) ([]uint32, error) {
	var seen bool
	var offs []uint32
	for _, m := range members {
		if m.Offset%8 != 0 {
			continue // a bitfield: never a lock nor a struct
		}
		o, err := lockField(m.Type, uint32(m.Offset/8), 0, &seen, level)
		if err != nil {
			return nil, err
		}
		offs = append(offs, o...)
	}
	return offs, nil
}

// lockField is btf_find_field_one for the spin lock: the locks within a
// member of type t at offset off (expected: the member's size if
// known, else 0).
func lockField(t btf.Type, off, expected uint32, seen *bool, level int) ([]uint32, error) {
	nelems := uint32(1)
	for i := 0; ; i++ {
		a, ok := t.(*btf.Array)
		if !ok {
			break
		}
		if i == maxResolveDepth {
			return nil, ErrLockNesting
		}
		nelems *= a.Nelems
		t = a.Type
	}
	if nelems == 0 {
		return nil, nil
	}
	if t.TypeName() == "bpf_spin_lock" {
		if *seen {
			return nil, ErrLockTwice
		}
		*seen = true
		if expected != 0 && expected != 4*nelems || off%4 != 0 {
			return nil, nil
		}
		if st, ok := t.(*btf.Struct); !ok || st.Size != 4 {
			return nil, nil
		}
		if nelems > 1 {
			return nil, nil
		}
		return []uint32{off}, nil
	}
	st, ok := t.(*btf.Struct) // unions are not searched
	if !ok {
		return nil, nil
	}
	members, size := st.Members, st.Size
	if expected != 0 && expected != size*nelems {
		return nil, nil
	}
	if level+1 >= maxResolveDepth {
		return nil, ErrLockNesting
	}
	inner, err := lockFields(members, level+1)
	if err != nil || len(inner) == 0 {
		return nil, err
	}
	if nelems > 1 {
		return nil, nil
	}
	for i := range inner {
		inner[i] += off
	}
	return inner, nil
}
