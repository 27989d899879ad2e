package daemon

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMetricsFlag: --metrics unix:PATH serves /metrics while the daemon
// runs and removes the socket when it stops; a non-local address stops
// the daemon from starting.
func TestMetricsFlag(t *testing.T) {
	dir := t.TempDir()
	sock, msock := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "metrics.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var errb bytes.Buffer
	go func() {
		done <- Main(ctx, append([]string{"--socket", sock, "--metrics", "unix:" + msock}, tempDirsArgs(t)...),
			env(nil), &bytes.Buffer{}, &errb)
	}()
	waitSocket(t, sock)
	hello(t, sock)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", msock)
	}}}
	resp, err := hc.Get("http://bpfd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `bpfd_requests_total{command="HELLO",errno="OK"} 1`) {
		t.Fatalf("metrics: %s\n%s", resp.Status, b)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(msock); !os.IsNotExist(err) {
		t.Errorf("metrics socket left after shutdown: %v", err)
	}

	var errb2 bytes.Buffer
	code := Main(context.Background(), append([]string{"--socket", filepath.Join(dir, "b2.sock"), "--metrics", "0.0.0.0:9477"},
		tempDirsArgs(t)...), env(nil), &bytes.Buffer{}, &errb2)
	if code != ExitError || !strings.Contains(errb2.String(), "loopback") {
		t.Fatalf("non-local metrics address: exit %d\n%s", code, errb2.String())
	}
}
