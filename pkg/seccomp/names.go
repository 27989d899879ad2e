package seccomp

import (
	"sort"

	"github.com/bpfd-project/bpfd/internal/editdist"
)

// SyscallNames returns every x86_64 syscall name of the table, sorted.
func SyscallNames() []string {
	out := make([]string, len(syscallTable))
	for i, e := range syscallTable {
		out[i] = e.name
	}
	return out
}

// SimilarSyscalls returns the syscall names within edit distance 2 of name
// (at most 3, closest first), for "did you mean" messages.
func SimilarSyscalls(name string) []string {
	type cand struct {
		name string
		d    int
	}
	var c []cand
	for _, e := range syscallTable {
		if d := editdist.Levenshtein(name, e.name); d <= 2 {
			c = append(c, cand{e.name, d})
		}
	}
	sort.SliceStable(c, func(i, j int) bool { return c[i].d < c[j].d })
	var out []string
	for i := 0; i < len(c) && i < 3; i++ {
		out = append(out, c[i].name)
	}
	return out
}
