package bpfctl

import (
	"runtime"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/internal/version"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// versionJSON is bpfctl version's JSON.
type versionJSON struct {
	Client struct {
		Version  string `json:"version"`
		Go       string `json:"go"`
		Protocol int    `json:"protocol"`
	} `json:"client"`
	Daemon *struct {
		Version string `json:"version"`
		Socket  string `json:"socket"`
	} `json:"daemon"`
}

func (a *App) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print bpfctl's version and the daemon's",
		Long: `Print bpfctl's version (and the Go release and protocol version it was
built with), then the version of the bpfd answering on the socket. When no
daemon answers, bpfctl's version is still printed and the exit code is 3.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.runVersion() },
	}
}

func (a *App) runVersion() error {
	var v versionJSON
	v.Client.Version, v.Client.Go, v.Client.Protocol = version.Version, runtime.Version(), wire.Version
	c, err := a.dial()
	if err == nil {
		v.Daemon = &struct {
			Version string `json:"version"`
			Socket  string `json:"socket"`
		}{c.ServerVersion(), c.Socket()}
	}
	if a.json {
		if err != nil {
			// The error document follows on the same stream; keep one
			// JSON document per command.
			return err
		}
		a.printJSON(v)
		return nil
	}
	a.printf("bpfctl %s (%s, protocol %d)\n", v.Client.Version, v.Client.Go, v.Client.Protocol)
	if err != nil {
		return err
	}
	a.printf("bpfd %s (%s)\n", v.Daemon.Version, v.Daemon.Socket)
	return nil
}
