//go:build race

package examples_test

// buildFlags are added to `go build` of bpfd and the examples: under the
// race detector (as in `make test`) they are built with it too, which
// reuses the packages the test run already compiled and checks the daemon
// and the examples for races while they run.
var buildFlags = []string{"-race"}
