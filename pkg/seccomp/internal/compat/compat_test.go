package compat

import (
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("BPFD_COMPAT_TEST_CHILD") == "1" {
		// getpid through int $0x80: prints whether it returned our pid,
		// or "fault" where the kernel has no 32-bit entry point.
		fmt.Println(probe())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func probe() (res string) {
	debug.SetPanicOnFault(true)
	defer func() {
		if recover() != nil {
			res = "fault"
		}
	}()
	return fmt.Sprint(int(Int80(I386Getpid, 0, 0, 0)) == os.Getpid())
}

// TestInt80Getpid: unfiltered, the compat entry point answers getpid like
// the native one. Kernels without it (CONFIG_IA32_EMULATION off, or
// disabled at boot or by the hypervisor) fault the instruction instead:
// then the route does not exist and the test says so.
func TestInt80Getpid(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BPFD_COMPAT_TEST_CHILD=1")
	out, err := cmd.Output()
	if string(out) == "fault\n" {
		t.Skip("this kernel has no 32-bit compat entry point (int $0x80 faults): nothing to call")
	}
	if err != nil || string(out) != "true\n" {
		t.Fatalf("int $0x80 getpid: %q, %v", out, err)
	}
}
