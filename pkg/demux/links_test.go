package demux

import "testing"

// TestDecisionHistogram: every value falls in a bucket whose upper bound
// is at least the value and at most 25% above it; p99 of a known
// distribution is its 99th value's bucket.
func TestDecisionHistogram(t *testing.T) {
	for _, v := range []uint64{0, 1, 3, 4, 5, 7, 8, 100, 999, 1000, 1024, 1 << 20, 123456789, 1<<62 + 12345} {
		b := histBucket(v)
		if b < 0 || b >= histBuckets {
			t.Fatalf("%d: bucket %d", v, b)
		}
		up := histUpper(b)
		if up < v || (v >= 4 && float64(up) > float64(v)*1.25+1) {
			t.Errorf("%d: bucket %d upper bound %d", v, b, up)
		}
		if b > 0 && histUpper(b-1) >= v {
			t.Errorf("%d: the bucket below (%d) already reaches %d", v, b-1, histUpper(b-1))
		}
	}
	var h [histBuckets]uint64
	for i := uint64(1); i <= 1000; i++ {
		h[histBucket(i*1000)]++ // 1 µs .. 1 ms
	}
	if p := p99(&h); p < 990_000 || p > 990_000*5/4 {
		t.Errorf("p99 = %d, want about 990000", p)
	}
	var empty [histBuckets]uint64
	if p99(&empty) != 0 {
		t.Error("p99 of nothing is not 0")
	}
}
