// Package version holds bpfd's version string, set at link time by the
// Makefile (-ldflags -X); "dev" for a plain go build.
package version

// Version is the version of this build.
var Version = "dev"
