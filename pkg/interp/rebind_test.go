package interp

import (
	"errors"
	"testing"
)

// TestSetRegion: a rebound region designates the new memory with the new
// access; pointers that are not dynamic regions of the run are refused.
func TestSetRegion(t *testing.T) {
	vm := NewVM(nil)
	a, b := []byte{1, 2, 3, 4}, []byte{9, 8}
	ptr, err := vm.AddRegionAccess(a, ReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.SetRegion(ptr, b, Read); err != nil {
		t.Fatal(err)
	}
	got, err := vm.Mem(ptr, 2, false)
	if err != nil || got[0] != 9 {
		t.Fatalf("read after rebind: %v, %v", got, err)
	}
	if _, err := vm.Mem(ptr, 4, false); err == nil {
		t.Fatal("read past the new region's end allowed")
	}
	if _, err := vm.Mem(ptr, 1, true); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write into the read-only rebound region: %v", err)
	}
	for _, bad := range []uint64{ptr + 1, ptr + 1<<32, 0, stackTop(0)} {
		if err := vm.SetRegion(bad, b, Read); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("SetRegion(%#x) = %v, want ErrOutOfBounds", bad, err)
		}
	}
}
