package maps

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func k32(i uint32) []byte {
	b := make([]byte, 4)
	ne.PutUint32(b, i)
	return b
}

func val(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

type opKind int

const (
	opUpdate opKind = iota
	opLookup
	opDelete
	opNext
	opLookupAndDelete
	opFreeze
)

// step is one operation and the errno both bpfd and the kernel must give.
// For opLookup/opLookupAndDelete with want == 0, value is compared to val;
// for opNext with want == 0, the returned key is compared to val unless val
// is nil, in which case it must be a key present in the map.
type step struct {
	op    opKind
	key   []byte
	val   []byte
	flags uint64
	want  unix.Errno
}

type tableCase struct {
	name      string
	spec      Spec
	createErr unix.Errno
	steps     []step
}

var (
	hash48   = Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 2}
	array48  = Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	progArr4 = Spec{Type: TypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}
	v1, v2   = val(8, 1), val(8, 2)
	zero8    = val(8, 0)
)

func withFlags(s Spec, f uint32) Spec { s.Flags = f; return s }

var tableCases = []tableCase{
	// Create parameters.
	{name: "create hash", spec: hash48},
	{name: "create array", spec: array48},
	{name: "create prog array", spec: progArr4},
	{name: "create named", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "ok_name.1"}},
	{name: "create unknown type", spec: Spec{Type: 0xffff, KeySize: 4, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create unspec type", spec: Spec{Type: 0, KeySize: 4, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create hash zero key", spec: Spec{Type: TypeHash, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create hash zero value", spec: Spec{Type: TypeHash, KeySize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create hash zero entries", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4}, createErr: unix.EINVAL},
	{name: "create array zero value", spec: Spec{Type: TypeArray, KeySize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create array zero entries", spec: Spec{Type: TypeArray, KeySize: 4, ValueSize: 4}, createErr: unix.EINVAL},
	{name: "create array key 8", spec: Spec{Type: TypeArray, KeySize: 8, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create array key 0", spec: Spec{Type: TypeArray, KeySize: 0, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create array no prealloc", spec: withFlags(array48, FlagNoPrealloc), createErr: unix.EINVAL},
	{name: "create hash no prealloc", spec: withFlags(hash48, FlagNoPrealloc)},
	{name: "create hash rdonly", spec: withFlags(hash48, FlagRdonly)},
	{name: "create hash wronly", spec: withFlags(hash48, FlagWronly)},
	{name: "create hash rdonly prog", spec: withFlags(hash48, FlagRdonlyProg)},
	{name: "create hash wronly prog", spec: withFlags(hash48, FlagWronlyProg)},
	{name: "create array rdonly wronly_prog", spec: withFlags(array48, FlagRdonly|FlagWronlyProg)},
	{name: "create hash rdonly|wronly", spec: withFlags(hash48, FlagRdonly|FlagWronly), createErr: unix.EINVAL},
	{name: "create hash prog rdonly|wronly", spec: withFlags(hash48, FlagRdonlyProg|FlagWronlyProg), createErr: unix.EINVAL},
	{name: "create array rdonly|wronly", spec: withFlags(array48, FlagRdonly|FlagWronly), createErr: unix.EINVAL},
	{name: "create array prog rdonly|wronly", spec: withFlags(array48, FlagRdonlyProg|FlagWronlyProg), createErr: unix.EINVAL},
	{name: "create hash unknown flag", spec: withFlags(hash48, 1<<30), createErr: unix.EINVAL},
	{name: "create array unknown flag", spec: withFlags(array48, 1<<30), createErr: unix.EINVAL},
	{name: "create hash key+value at kmalloc limit", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: kmallocMax - htabElemSize - 4, MaxEntries: 1}, createErr: unix.E2BIG},
	{name: "create hash key+value below kmalloc limit", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: kmallocMax - htabElemSize - 5, MaxEntries: 1, Flags: FlagNoPrealloc}},
	{name: "create hash too many entries", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: maxHashEntries + 1, Flags: FlagNoPrealloc}, createErr: unix.E2BIG},
	{name: "create array huge", spec: Spec{Type: TypeArray, KeySize: 4, ValueSize: 1 << 20, MaxEntries: 1 << 31}, createErr: unix.ENOMEM},
	{name: "create array value above INT_MAX", spec: Spec{Type: TypeArray, KeySize: 4, ValueSize: 1 << 31, MaxEntries: 1}, createErr: unix.E2BIG},
	{name: "create name too long", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "0123456789abcdef"}, createErr: unix.EINVAL},
	{name: "create name bad char", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "a-b"}, createErr: unix.EINVAL},
	{name: "create prog array value 8", spec: Spec{Type: TypeProgArray, KeySize: 4, ValueSize: 8, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create prog array rdonly prog", spec: withFlags(progArr4, FlagRdonlyProg), createErr: unix.EINVAL},
	{name: "create prog array key 8", spec: Spec{Type: TypeProgArray, KeySize: 8, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},

	// Hash operations.
	{name: "hash lookup missing", spec: hash48, steps: []step{{op: opLookup, key: k32(1), want: unix.ENOENT}}},
	{name: "hash noexist then exists", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1, flags: UpdateNoExist},
		{op: opUpdate, key: k32(1), val: v2, flags: UpdateNoExist, want: unix.EEXIST},
		{op: opLookup, key: k32(1), val: v1},
	}},
	{name: "hash exist on missing", spec: hash48, steps: []step{{op: opUpdate, key: k32(1), val: v1, flags: UpdateExist, want: unix.ENOENT}}},
	{name: "hash exist on present", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opUpdate, key: k32(1), val: v2, flags: UpdateExist},
		{op: opLookup, key: k32(1), val: v2},
	}},
	{name: "hash update flags 3", spec: hash48, steps: []step{{op: opUpdate, key: k32(1), val: v1, flags: 3, want: unix.EINVAL}}},
	{name: "hash update flags 8", spec: hash48, steps: []step{{op: opUpdate, key: k32(1), val: v1, flags: 8, want: unix.EINVAL}}},
	{name: "hash update F_LOCK", spec: hash48, steps: []step{{op: opUpdate, key: k32(1), val: v1, flags: UpdateLock, want: unix.EINVAL}}},
	{name: "hash full", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opUpdate, key: k32(2), val: v1},
		{op: opUpdate, key: k32(3), val: v1, want: unix.E2BIG},
		{op: opUpdate, key: k32(3), val: v1, flags: UpdateNoExist, want: unix.E2BIG},
		{op: opUpdate, key: k32(2), val: v2},
		{op: opUpdate, key: k32(2), val: v1, flags: UpdateExist},
		{op: opDelete, key: k32(1)},
		{op: opUpdate, key: k32(3), val: v2},
		{op: opLookup, key: k32(3), val: v2},
	}},
	{name: "hash full no prealloc", spec: withFlags(hash48, FlagNoPrealloc), steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opUpdate, key: k32(2), val: v1},
		{op: opUpdate, key: k32(3), val: v1, want: unix.E2BIG},
		{op: opUpdate, key: k32(2), val: v2},
	}},
	{name: "hash delete missing", spec: hash48, steps: []step{{op: opDelete, key: k32(1), want: unix.ENOENT}}},
	{name: "hash delete twice", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opDelete, key: k32(1)},
		{op: opDelete, key: k32(1), want: unix.ENOENT},
		{op: opLookup, key: k32(1), want: unix.ENOENT},
	}},
	{name: "hash next on empty", spec: hash48, steps: []step{
		{op: opNext, want: unix.ENOENT},
		{op: opNext, key: k32(7), want: unix.ENOENT},
	}},
	{name: "hash next from missing key gives first", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opNext, key: k32(7), val: k32(1)},
		{op: opNext, val: k32(1)},
		{op: opNext, key: k32(1), want: unix.ENOENT},
	}},
	{name: "hash next two keys", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opUpdate, key: k32(2), val: v1},
		{op: opNext},
		{op: opNext, key: k32(9)},
	}},
	{name: "hash lookup and delete", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v2},
		{op: opLookupAndDelete, key: k32(1), val: v2},
		{op: opLookupAndDelete, key: k32(1), want: unix.ENOENT},
		{op: opLookup, key: k32(1), want: unix.ENOENT},
	}},
	{name: "hash frozen", spec: hash48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opFreeze},
		{op: opUpdate, key: k32(1), val: v2, want: unix.EPERM},
		{op: opUpdate, key: k32(2), val: v2, flags: 3, want: unix.EPERM},
		{op: opDelete, key: k32(1), want: unix.EPERM},
		{op: opLookupAndDelete, key: k32(1), want: unix.EPERM},
		{op: opLookup, key: k32(1), val: v1},
		{op: opNext, val: k32(1)},
		{op: opFreeze, want: unix.EPERM},
	}},
	{name: "hash rdonly", spec: withFlags(hash48, FlagRdonly), steps: []step{
		{op: opUpdate, key: k32(1), val: v1, want: unix.EPERM},
		{op: opDelete, key: k32(1), want: unix.EPERM},
		{op: opLookup, key: k32(1), want: unix.ENOENT},
		{op: opNext, want: unix.ENOENT},
		{op: opLookupAndDelete, key: k32(1), want: unix.EPERM},
		{op: opFreeze, want: unix.EPERM},
	}},
	{name: "hash wronly", spec: withFlags(hash48, FlagWronly), steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opLookup, key: k32(1), want: unix.EPERM},
		{op: opNext, want: unix.EPERM},
		{op: opLookupAndDelete, key: k32(1), want: unix.EPERM},
		{op: opDelete, key: k32(1)},
		{op: opFreeze},
		{op: opUpdate, key: k32(1), val: v1, want: unix.EPERM},
	}},

	// Array operations.
	{name: "array lookup zero filled", spec: array48, steps: []step{{op: opLookup, key: k32(3), val: zero8}}},
	{name: "array lookup out of range", spec: array48, steps: []step{{op: opLookup, key: k32(4), want: unix.ENOENT}}},
	{name: "array update out of range", spec: array48, steps: []step{
		{op: opUpdate, key: k32(4), val: v1, want: unix.E2BIG},
		{op: opUpdate, key: k32(4), val: v1, flags: UpdateNoExist, want: unix.E2BIG},
		{op: opUpdate, key: k32(1 << 31), val: v1, flags: UpdateExist, want: unix.E2BIG},
	}},
	{name: "array noexist always exists", spec: array48, steps: []step{
		{op: opUpdate, key: k32(0), val: v1, flags: UpdateNoExist, want: unix.EEXIST},
		{op: opUpdate, key: k32(0), val: v1, flags: UpdateExist},
		{op: opUpdate, key: k32(1), val: v2},
		{op: opLookup, key: k32(0), val: v1},
		{op: opLookup, key: k32(1), val: v2},
	}},
	{name: "array update bad flags", spec: array48, steps: []step{
		{op: opUpdate, key: k32(0), val: v1, flags: 3, want: unix.EINVAL},
		{op: opUpdate, key: k32(9), val: v1, flags: 8, want: unix.EINVAL},
		{op: opUpdate, key: k32(0), val: v1, flags: UpdateLock, want: unix.EINVAL},
		{op: opUpdate, key: k32(9), val: v1, flags: UpdateLock, want: unix.EINVAL}, // F_LOCK refused before the index
	}},
	{name: "array delete", spec: array48, steps: []step{
		{op: opDelete, key: k32(0), want: unix.EINVAL},
		{op: opDelete, key: k32(9), want: unix.EINVAL},
	}},
	{name: "array next", spec: array48, steps: []step{
		{op: opNext, val: k32(0)},
		{op: opNext, key: k32(0), val: k32(1)},
		{op: opNext, key: k32(2), val: k32(3)},
		{op: opNext, key: k32(3), want: unix.ENOENT},
		{op: opNext, key: k32(4), val: k32(0)},
		{op: opNext, key: k32(1 << 31), val: k32(0)},
	}},
	{name: "array lookup and delete", spec: array48, steps: []step{{op: opLookupAndDelete, key: k32(0), want: ENOTSUPP}}},
	{name: "array frozen", spec: array48, steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opFreeze},
		{op: opUpdate, key: k32(1), val: v2, want: unix.EPERM},
		{op: opDelete, key: k32(1), want: unix.EPERM},
		{op: opLookupAndDelete, key: k32(1), want: unix.EPERM},
		{op: opLookup, key: k32(1), val: v1},
		{op: opFreeze, want: unix.EPERM},
	}},
	{name: "array rdonly", spec: withFlags(array48, FlagRdonly), steps: []step{
		{op: opUpdate, key: k32(1), val: v1, want: unix.EPERM},
		{op: opDelete, key: k32(1), want: unix.EPERM},
		{op: opLookup, key: k32(1), val: zero8},
		{op: opFreeze, want: unix.EPERM},
	}},
	{name: "array wronly", spec: withFlags(array48, FlagWronly), steps: []step{
		{op: opUpdate, key: k32(1), val: v1},
		{op: opLookup, key: k32(1), want: unix.EPERM},
		{op: opNext, want: unix.EPERM},
		{op: opLookupAndDelete, key: k32(1), want: unix.EPERM},
	}},

	// Prog array operations that need no program.
	{name: "prog array empty", spec: progArr4, steps: []step{
		{op: opLookup, key: k32(0), want: unix.ENOENT},
		{op: opLookup, key: k32(4), want: unix.ENOENT},
		{op: opDelete, key: k32(0), want: unix.ENOENT},
		{op: opDelete, key: k32(4), want: unix.E2BIG},
		{op: opUpdate, key: k32(4), val: k32(1), want: unix.E2BIG},
		{op: opUpdate, key: k32(0), val: k32(1), flags: UpdateNoExist, want: unix.EINVAL},
		{op: opUpdate, key: k32(0), val: k32(1), flags: UpdateExist, want: unix.EINVAL},
		{op: opNext, val: k32(0)},
		{op: opNext, key: k32(3), want: unix.ENOENT},
		{op: opLookupAndDelete, key: k32(0), want: ENOTSUPP},
		{op: opFreeze},
		{op: opDelete, key: k32(0), want: unix.EPERM},
	}},
}

// runSteps runs tc's steps on m, failing on the first disagreement.
func runSteps(t *testing.T, m ops, tc tableCase) {
	t.Helper()
	ks, vs := int(tc.spec.KeySize), tc.spec.SyscallValueSize()
	for i, s := range tc.steps {
		var err error
		out := make([]byte, vs)
		next := make([]byte, ks)
		switch s.op {
		case opUpdate:
			err = m.Update(s.key, s.val, s.flags)
		case opLookup:
			if tc.spec.Type == TypeBloomFilter {
				copy(out, s.val) // the value to test is the input
			}
			err = m.Lookup(s.key, out)
		case opDelete:
			err = m.Delete(s.key)
		case opNext:
			err = m.NextKey(s.key, next)
		case opLookupAndDelete:
			err = m.LookupAndDelete(s.key, out)
		case opFreeze:
			err = m.Freeze()
		}
		if got := errnoOf(err); got != s.want {
			t.Fatalf("step %d (op %d key %x flags %d): errno %d (%v), want %d (%v)", i, s.op, s.key, s.flags, got, got, s.want, s.want)
		}
		if err != nil {
			continue
		}
		switch {
		case (s.op == opLookup || s.op == opLookupAndDelete) && s.val != nil && !bytes.Equal(out, s.val):
			t.Fatalf("step %d: value %x, want %x", i, out, s.val)
		case s.op == opNext && s.val != nil && !bytes.Equal(next, s.val):
			t.Fatalf("step %d: next key %x, want %x", i, next, s.val)
		case s.op == opNext && s.val == nil:
			if err := m.Lookup(next, make([]byte, vs)); err != nil {
				t.Fatalf("step %d: next key %x is not in the map: %v", i, next, err)
			}
		}
	}
}

func TestTable(t *testing.T) {
	for _, tc := range tableCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("bpfd", func(t *testing.T) {
				m, err := New(tc.spec)
				if got := errnoOf(err); got != tc.createErr {
					t.Fatalf("New: errno %d (%v), want %d (%v)", got, err, tc.createErr, tc.createErr)
				}
				if err != nil {
					if verr := tc.spec.Validate(); errnoOf(verr) != tc.createErr {
						t.Fatalf("Validate: %v, New: %v", verr, err)
					}
					return
				}
				t.Cleanup(func() { m.Close() })
				runSteps(t, m, tc)
			})
			t.Run("kernel", func(t *testing.T) {
				needKernel(t)
				k, err := newKernelMap(t, tc.spec)
				if got := errnoOf(err); got != tc.createErr {
					t.Fatalf("kernel create: errno %d (%v), want %d (%v)", got, err, tc.createErr, tc.createErr)
				}
				if err != nil {
					return
				}
				runSteps(t, k, tc)
			})
		})
	}
}
