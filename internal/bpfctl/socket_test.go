package bpfctl

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/internal/defaults"
	"github.com/bpfd-project/bpfd/pkg/demux"
)

// TestDefaultSocketFallback: an unprivileged bpfctl with no --socket and
// no $BPFD_SOCKET tries its own runtime directory, then the system
// socket, and names every path it tried when none answers.
func TestDefaultSocketFallback(t *testing.T) {
	if c, err := net.Dial("unixpacket", defaults.SystemSocket); err == nil {
		c.Close()
		t.Skip("a bpfd answers on " + defaults.SystemSocket + " on this machine; the fallback would reach it")
	}
	xdg := t.TempDir()
	uid := 4242
	run := func(args ...string) result {
		var out, errb bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, EUID: &uid,
			Getenv: func(k string) string {
				if k == "XDG_RUNTIME_DIR" {
					return xdg
				}
				return ""
			}}
		return result{a.Run(args), out.String(), errb.String()}
	}
	own := filepath.Join(xdg, "bpfd", "bpfd.sock")
	r := run("status")
	if r.code != ExitUnreachable || !strings.Contains(r.stderr, own) || !strings.Contains(r.stderr, defaults.SystemSocket) {
		t.Fatalf("no daemon: exit %d, stderr %q; want exit 3 naming %s and %s", r.code, r.stderr, own, defaults.SystemSocket)
	}

	// A daemon in the user's runtime directory is found first.
	if err := os.MkdirAll(filepath.Dir(own), 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := demux.NewServer(&demux.Config{Logger: zap.NewNop(), Version: "fallback-test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: own, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	r = run("version")
	if r.code != 0 || !strings.Contains(r.stdout, "bpfd fallback-test ("+own+")") {
		t.Fatalf("own daemon: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestVersion(t *testing.T) {
	d := startDaemon(t)
	r := d.mustRun(t, "version")
	if !strings.HasPrefix(r.stdout, "bpfctl ") || !strings.Contains(r.stdout, "\nbpfd test ("+d.socket+")\n") {
		t.Fatalf("version: %q", r.stdout)
	}
	if r2 := d.mustRun(t, "--version"); r2.stdout != r.stdout {
		t.Fatalf("--version %q differs from version %q", r2.stdout, r.stdout)
	}
	r = d.mustRun(t, "-j", "version")
	if !strings.Contains(r.stdout, `"daemon":{"version":"test","socket":"`+d.socket+`"}`) || !strings.Contains(r.stdout, `"protocol":1`) {
		t.Fatalf("version JSON: %q", r.stdout)
	}
	r = d.run(t, "--socket", filepath.Join(d.dir, "nosuch.sock"), "version")
	if r.code != ExitUnreachable || !strings.HasPrefix(r.stdout, "bpfctl ") || !strings.Contains(r.stderr, "cannot talk to bpfd") {
		t.Fatalf("version without a daemon: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
