package client

import (
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfd-project/bpfd/internal/progen"
)

var (
	randomSeed  = flag.Uint64("random-seed", 1, "seed of TestRandomProgramsThroughDaemon (0: time-based)")
	randomProgs = flag.Int("random-progs", 500, "programs in TestRandomProgramsThroughDaemon")
)

// TestRandomProgramsThroughDaemon loads random programs (the interpreter's
// kernel-differential generator, inputs from the packet) through the whole
// daemon path — client, protocol, verifier, interpreter — and in the
// kernel, and requires the same verdict and the same return value.
func TestRandomProgramsThroughDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel oracle needs root for bpf(2)")
	}
	seed := *randomSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	n := *randomProgs
	if testing.Short() {
		n = 100
	}
	t.Logf("seed %d, %d programs (rerun with -args -random-seed=%d)", seed, n, seed)
	c := newTestConn(t)
	rng := rand.New(rand.NewPCG(seed, 0xdae0))
	var compared, bothRefused int
	for i := range n {
		insns, input := progen.GenerateInput(rng, &progen.Options{Body: 16 + rng.IntN(64)})
		// Work around the kernel's missing zero-extension after a 32-bit
		// cmpxchg (see pkg/interp's TestKernelKnownBugs); the program
		// means the same to both sides.
		insns = progen.ZeroExtendCmpXchg(insns)
		// Both sides get the atomic operations meant (cilium/ebpf's
		// Marshal would turn them all into plain adds for the kernel).
		setAtomicImm(insns)
		data := append(make([]byte, 14), input...)
		data[12] = 0x88 // an EtherType the kernel's skb test run does not parse
		kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
			Instructions: insns}, ebpf.ProgramOptions{LogDisabled: true})
		p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: insns, License: "GPL"})
		switch {
		case kerr != nil && err != nil:
			bothRefused++
			continue
		case kerr != nil:
			p.Close()
			t.Fatalf("seed %d program %d: bpfd accepts what the kernel refuses: %v\n%v", seed, i, kerr, insns)
		case err != nil:
			kp.Close()
			var ve *VerifierError
			if errors.As(err, &ve) {
				t.Fatalf("seed %d program %d: only the kernel accepts; bpfd says:\n%s\n%v", seed, i, ve.Log, insns)
			}
			t.Fatalf("seed %d program %d: %v", seed, i, err)
		}
		want, kerr := kp.Run(&ebpf.RunOptions{Data: data})
		kp.Close()
		got, err := p.Run(&RunOptions{Data: data})
		p.Close()
		if err != nil || kerr != nil {
			t.Fatalf("seed %d program %d: run: bpfd %v, kernel %v", seed, i, err, kerr)
		}
		if got != want {
			t.Fatalf("seed %d program %d: bpfd returned %#x, kernel %#x\n%v", seed, i, got, want, insns)
		}
		compared++
	}
	t.Logf("%d programs agreed, %d refused by both", compared, bothRefused)
	if compared < n*9/10 {
		t.Fatalf("only %d of %d programs were comparable", compared, n)
	}
}
