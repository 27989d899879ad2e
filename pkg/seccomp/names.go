package seccomp

import "sort"

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
		if d := editDistance(name, e.name); d <= 2 {
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

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
