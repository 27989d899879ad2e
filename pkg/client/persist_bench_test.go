package client

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/pkg/demux"
)

// BenchmarkUpdatePersistence measures the cost of crash-proof map storage
// on the update path: the Update round trip of a hash map whose storage
// is a memfd (no persistence: "memfd", the baseline) and of one whose
// storage is a file in a runtime directory on tmpfs, mapped shared, as
// bpfd runs by default ("runtime-file"), in the same run; the last
// sub-benchmark reports the ratio (target ≤ 1.05). Both daemons run in
// this process (the round trip is what differs, not the process).
func BenchmarkUpdatePersistence(b *testing.B) {
	p50 := map[string]float64{}
	for _, tc := range []struct {
		name    string
		runtime bool
	}{
		{"memfd", false},
		{"runtime-file", true},
		{"memfd-again", false},
		{"runtime-file-again", true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := startServerWith(b, func(dir string) *demux.Config {
				cfg := &demux.Config{Logger: zap.NewNop()}
				if tc.runtime {
					rt, err := os.MkdirTemp("/dev/shm", "bpfd-bench-")
					if err != nil {
						rt = filepath.Join(dir, "runtime")
						os.Mkdir(rt, 0o700)
					}
					b.Cleanup(func() { os.RemoveAll(rt) })
					cfg.RuntimeDir = rt
				}
				return cfg
			})
			c := srv.dial(b)
			m, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4096})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			key, val := make([]byte, 4), make([]byte, 8)
			var lat latencies
			lat.reset()
			i := uint32(0)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				binary.LittleEndian.PutUint32(key, i%4096)
				binary.LittleEndian.PutUint64(val, uint64(i))
				i++
				t0 := time.Now()
				if err := m.Update(key, val, UpdateAny); err != nil {
					b.Fatal(err)
				}
				lat.add(time.Since(t0))
			}
			b.StopTimer()
			p50[tc.name] = lat.median()
			b.ReportMetric(lat.median(), "p50-ns")
		})
	}
	if p50["memfd"] > 0 && p50["memfd-again"] > 0 {
		base := (p50["memfd"] + p50["memfd-again"]) / 2
		with := (p50["runtime-file"] + p50["runtime-file-again"]) / 2
		b.Run("ratio", func(b *testing.B) {
			for b.Loop() {
			}
			b.ReportMetric(with/base, "runtime-file/memfd-p50")
		})
	}
}
