package verifier

import (
	"testing"
	"time"
)

// quick reports whether the tests run with -short or the race detector
// (which slows the verifier about tenfold): long randomised tests then
// take a smaller time budget or instruction limit, checking the same
// properties on fewer programs.
func quick() bool { return raceEnabled || testing.Short() }

// budget is the time a long randomised test may take: full normally, a
// third of it under quick().
func budget(full time.Duration) time.Duration {
	if quick() {
		return full / 3
	}
	return full
}
