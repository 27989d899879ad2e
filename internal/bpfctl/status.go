package bpfctl

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// statusJSON is bpfctl status's JSON: the daemon's status plus its
// version and the socket bpfctl used.
type statusJSON struct {
	Version string `json:"version"`
	Socket  string `json:"socket"`
	client.Status
}

func (a *App) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's version, objects, memory, connections, quotas and seccomp attachments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial()
			if err != nil {
				return err
			}
			st, err := c.Status()
			if err != nil {
				return fail("status", kOther, false, err)
			}
			if a.json {
				a.printJSON(statusJSON{Version: c.ServerVersion(), Socket: a.socketPath(), Status: st})
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			root := st.PinRoot
			if root == "" {
				root = "(pins disabled)"
			}
			fmt.Fprintf(tw, "version\t%s\n", c.ServerVersion())
			if a.Uptime != nil {
				fmt.Fprintf(tw, "uptime\t%s\n", a.Uptime(st))
			} else {
				fmt.Fprintf(tw, "uptime\t%s (since %s)\n", time.Duration(st.Uptime*float64(time.Second)).Truncate(time.Second),
					st.Started.Local().Format(time.DateTime))
			}
			fmt.Fprintf(tw, "socket\t%s\n", a.socketPath())
			fmt.Fprintf(tw, "pin root\t%s\n", root)
			fmt.Fprintf(tw, "objects\t%d (maps %d, programs %d)\n", st.Objects, st.Maps, st.Programs)
			fmt.Fprintf(tw, "seccomp attachments\t%d\n", st.Attachments)
			fmt.Fprintf(tw, "map memory\t%s\n", sizeString(st.MapMemory))
			fmt.Fprintf(tw, "connections\t%d\n", st.Connections)
			fmt.Fprintf(tw, "descriptors\t%d\n", st.Descriptors)
			fmt.Fprintf(tw, "handles\t%d\n", st.Handles)
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(st.UIDs) > 0 {
				a.printf("\n")
				tw = tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "UID\tOBJECTS\tMAP MEMORY\tDESCRIPTORS\tCONNECTIONS")
				for _, u := range st.UIDs {
					fmt.Fprintf(tw, "%d\t%d/%d\t%s/%s\t%d/%d\t%d/%d\n", u.UID, u.Objects, u.Quota.Objects,
						sizeString(u.MapMemory), sizeString(u.Quota.MapMemory), u.Descriptors, u.Quota.Descriptors,
						u.Connections, u.Quota.Conns)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if len(st.Seccomp) == 0 {
				return nil
			}
			a.printf("\n")
			tw = tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SECCOMP\tPROG\tATTACHED BY\tROUTED\tALLOWED\tDENIED\tKILLED")
			for _, sa := range st.Seccomp {
				fmt.Fprintf(tw, "%d\t%d %s\t%s(%d) uid %d\t%d\t%d\t%s\t%d\n", sa.ID, sa.ProgID, sa.ProgName, sa.Comm, sa.PID, sa.UID,
					sa.Routed, sa.Allowed, deniedString(sa.Denied), sa.Killed)
			}
			return tw.Flush()
		},
	}
}

// sizeString formats a byte count: 1360B, 4KiB, 256MiB (exact units only
// above bytes, so nothing is rounded away).
func sizeString(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && n%1024 == 0 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%d%s", n, units[i])
}
