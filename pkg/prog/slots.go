package prog

import "github.com/bpfd-project/bpfd/pkg/percpu"

// pool returns the CPU slot pool p's invocations run on: every invocation
// (one test-run repetition, one seccomp decision) holds one slot of it
// from start to exit, tail calls included, so per-CPU map values and
// bpf_get_smp_processor_id behave as on a kernel CPU with preemption
// disabled.
func (p *Program) pool() *percpu.Pool {
	if p.env.Pool != nil {
		return p.env.Pool
	}
	return percpu.Default()
}
