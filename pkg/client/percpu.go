package client

import "github.com/bpfd-project/bpfd/pkg/percpu"

// PossibleCPUs returns the number of possible CPUs of this machine
// (/sys/devices/system/cpu/possible), which is how many values a per-CPU
// map holds per key, as with the kernel. bpfd's programs run on as many
// CPU slots.
func PossibleCPUs() int { return percpu.Possible() }

// perCPU reports whether t keeps one value per CPU.
func (t MapType) perCPU() bool { return t == PercpuHash || t == PercpuArray || t == LRUPercpuHash }

// ValueBufferSize returns the size of the value buffers Lookup, Update,
// LookupAndDelete, the batch operations and Iterate take: ValueSize, or
// for per-CPU maps one value per possible CPU, each rounded up to 8 bytes
// (PossibleCPUs() * roundup(ValueSize, 8)), exactly as the kernel's
// bpf(2) exchanges them, so code written for the kernel sizes its buffers
// the same way.
func (m *Map) ValueBufferSize() int {
	if m.info.Type.perCPU() {
		return PossibleCPUs() * int((m.info.ValueSize+7)&^7)
	}
	return int(m.info.ValueSize)
}
