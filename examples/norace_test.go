//go:build !race

package examples_test

// buildFlags are added to `go build` of bpfd and the examples (see
// race_test.go).
var buildFlags []string
