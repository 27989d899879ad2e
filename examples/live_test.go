package examples_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/internal/netnstest"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// TestExample05Live runs scenario 5 on real traffic ("05-port-filter
// live"): two network namespaces joined by a veth pair, an NFQUEUE rule,
// the unchanged port_filter program attached to the queue, and real TCP
// connections and UDP datagrams passing and dropping as the uid-65534
// editor, holding only a write-only descriptor of the port map, edits it.
// The verdicts must be exactly those the crafted-packet mode prints.
func TestExample05Live(t *testing.T) {
	netnstest.Require(t)
	dir := publicTempDir(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := append(append([]string{"build"}, buildFlags...), "-o", dir+"/", "./cmd/bpfd", "./examples/05-port-filter")
	cmd := exec.Command(goTool, args...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sock := startDaemon(t, dir)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	ex := exec.CommandContext(ctx, filepath.Join(dir, "05-port-filter"), "live")
	ex.Env = append(os.Environ(), client.SocketEnv+"="+sock, raceEnv)
	ex.Stdout, ex.Stderr = &stdout, &stderr
	ex.WaitDelay = 5 * time.Second
	if err := ex.Run(); err != nil {
		t.Fatalf("05-port-filter live: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	L := func(s string) string { return "^" + regexp.QuoteMeta(s) + "$" }
	checkOutput(t, stdout.String(), []string{
		L(`loaded xdp program "port_filter"; ports map created`),
		L(`namespaces a and b joined by a veth pair; in b, TCP and UDP go to nfqueue 5`),
		L(`attached port_filter to nfqueue 5: real packets are decided by bpfd`),
		L(`sent the editor a write-only descriptor of "ports"`),
		`^  \[uid \d+\] lookup\(443\) = EPERM$`,
		`^  \[uid \d+\] load a program that looks up "ports" = EACCES$`,
		L(`  ports []: tcp4:443=DROP udp4:53=DROP tcp6:443=DROP udp6:53=DROP tcp6:22=DROP`),
		L(`editor: add 443`),
		L(`  ports [443]: tcp4:443=PASS udp4:53=DROP tcp6:443=PASS udp6:53=DROP tcp6:22=DROP`),
		L(`editor: add 53`),
		L(`  ports [53 443]: tcp4:443=PASS udp4:53=PASS tcp6:443=PASS udp6:53=PASS tcp6:22=DROP`),
		L(`editor: del 443`),
		L(`  ports [53]: tcp4:443=DROP udp4:53=PASS tcp6:443=DROP udp6:53=PASS tcp6:22=DROP`),
		`^link: \d+ packets, \d+ passed, \d+ dropped, 0 program errors$`,
	}, false)
	// The example removed its namespaces.
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), "bpfd-ex05-") {
		t.Errorf("namespaces left behind:\n%s", out)
	}
}
