// Command mangen writes the man pages of bpfd (section 8) and of bpfctl
// and every bpfctl command (section 1) into a directory, generated from the
// programs' own flag definitions with cobra/doc, so they never drift from
// the binaries. make install runs it:
//
//	go run ./internal/mangen DIR
//
// SOURCE_DATE_EPOCH, if set, fixes the date in the pages (reproducible
// builds).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"

	"github.com/bpfd-project/bpfd/internal/bpfctl"
	"github.com/bpfd-project/bpfd/internal/daemon"
	"github.com/bpfd-project/bpfd/internal/version"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: mangen DIR")
		return 2
	}
	if err := Generate(args[0]); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		return 1
	}
	return 0
}

// bpfdLong is the DESCRIPTION of bpfd(8).
const bpfdLong = `bpfd is a userspace bpf(2): a daemon that holds eBPF maps and programs and
serves a syscall-like command set over a SOCK_SEQPACKET Unix socket. Every
object is reached through a descriptor, a real file descriptor that carries
its own access mode, travels between processes over SCM_RIGHTS, can be
reopened with less access and revoked. Pins are regular files under the pin
root; pinned objects are saved in the state directory and survive restarts.

Every setting has a flag, an environment variable (BPFD_ and the flag name
in upper case, '-' as '_') and a key of the config file (--config, default
none; one "key = value" per line). A flag beats the environment, which
beats the config file, which beats the default.

Defaults: as root the socket /run/bpfd/bpfd.sock, the pin root
/run/bpfd/pins and the state directory /var/lib/bpfd; as another user
$XDG_RUNTIME_DIR/bpfd/bpfd.sock, $XDG_RUNTIME_DIR/bpfd/pins and
$XDG_STATE_HOME/bpfd (or ~/.local/state/bpfd).

With systemd socket activation (LISTEN_FDS) bpfd serves the passed socket
and ignores --socket. It tells the service manager READY=1 once serving,
and pings the watchdog while its registry answers. SIGTERM and SIGINT shut
it down cleanly: requests received are answered and pinned objects saved.

Exit status: 0 after a clean shutdown, 1 for a start-up or serving failure,
2 for bad flags. See bpfctl(1) and /usr/share/doc/bpfd.`

// bpfdCommand describes bpfd for cobra/doc: its flags are the daemon's own
// flag.FlagSet.
func bpfdCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "bpfd",
		Short: "the bpfd daemon: eBPF maps and programs served over a Unix socket",
		Long:  bpfdLong,
		Example: "  bpfd\n" +
			"  bpfd --socket /tmp/bpfd.sock --pin-root /tmp/pins --state-dir /tmp/state\n" +
			"  systemd-socket-activate --seqpacket -l /tmp/bpfd.sock bpfd --pin-root /tmp/pins",
		Run: func(*cobra.Command, []string) {},
	}
	pfs := pflag.NewFlagSet("bpfd", pflag.ContinueOnError)
	pfs.AddGoFlagSet(daemon.FlagSet())
	c.Flags().AddFlagSet(pfs)
	c.Flags().SortFlags = true
	return c
}

// Generate writes bpfd.8 and bpfctl*.1 into dir (made if missing).
func Generate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	src := "bpfd " + version.Version
	if err := writeMan(bpfdCommand(), &doc.GenManHeader{Title: "BPFD", Section: "8", Source: src, Manual: "bpfd manual"},
		filepath.Join(dir, "bpfd.8")); err != nil {
		return err
	}
	root := bpfctl.CommandTree()
	root.DisableAutoGenTag = true
	return doc.GenManTree(root, &doc.GenManHeader{Section: "1", Source: src, Manual: "bpfd manual"}, dir)
}

func writeMan(c *cobra.Command, h *doc.GenManHeader, path string) error {
	c.DisableAutoGenTag = true
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := doc.GenMan(c, h, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
