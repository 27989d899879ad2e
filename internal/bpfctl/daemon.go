package bpfctl

import (
	"time"

	"github.com/spf13/cobra"
)

func (a *App) daemonCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Act on the daemon itself",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "upgrade",
		Short: "Hand the running daemon over to the binary at its path, keeping everything",
		Long: `Make the running bpfd hand everything it holds — its listening socket,
every client connection, every descriptor, map storage, programs, links and
seccomp listeners — to a freshly executed binary at the path it was started
from (install the new version there first). Clients notice a pause and
nothing else: no request fails, no descriptor dies. Prints the versions
before and after and the pause. Needs root or the daemon's own user. Under
systemd, 'systemctl reload bpfd' does the same (SIGHUP). If the new binary
cannot be executed, the daemon serves on and the command fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.UpgradeDaemon()
			if err != nil {
				return fail("daemon upgrade", kOther, false, err)
			}
			if a.json {
				a.printJSON(res)
				return nil
			}
			a.printf("bpfd upgraded: %s -> %s (pid %d), paused %v; took over %d objects, %d descriptors, %d connections\n",
				res.FromVersion, res.ToVersion, res.PID, time.Duration(res.PauseNs).Round(time.Microsecond),
				res.Objects, res.Descriptors, res.Conns)
			return nil
		},
	})
	return cmd
}
