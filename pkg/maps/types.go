package maps

import "sort"

// Types returns the map types New can create, in increasing order. Tests
// that must cover every type (the daemon's crash test) enumerate them
// here, so that a type added to the package cannot be forgotten there.
func Types() []uint32 {
	ts := make([]uint32, 0, len(implemented))
	for t := range implemented {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}
