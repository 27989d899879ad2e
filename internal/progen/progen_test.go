package progen_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/bpfd-project/bpfd/internal/progen"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *progen.Options
	}{
		{name: "defaults", opts: nil},
		{name: "short", opts: &progen.Options{Body: 4}},
		{name: "no v4 no atomics", opts: &progen.Options{NoV4: true, NoAtomics: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marshal := func(seed uint64) []byte {
				var buf bytes.Buffer
				insns := progen.Generate(rand.New(rand.NewPCG(seed, 1)), tc.opts)
				if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
					t.Fatal(err)
				}
				return buf.Bytes()
			}
			if !bytes.Equal(marshal(42), marshal(42)) {
				t.Fatal("same seed, different programs")
			}
			for seed := range uint64(200) {
				p, err := interp.Load(marshal(seed), nil)
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if _, err := p.Run(nil); err != nil {
					t.Fatalf("seed %d: generated program faults: %v", seed, err)
				}
			}
		})
	}
}
