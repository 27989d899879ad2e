package bpfctl

import (
	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
)

func (a *App) destroyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy PIN",
		Short: "Destroy a pinned object: revoke every descriptor of it and remove all its pins",
		Long: `Open PIN for its destroy right and destroy its object: every descriptor
and handle of it, in every process, stops working and every pin file of it
is removed, at once.

The destroy right belongs to the object's creator. A pin passes it on only
to the owner of the pin file, and only if the pin was made from the
creating descriptor (a reopened or lent descriptor never carries it); it
does not depend on the object's read or write access (a BPF_F_RDONLY map
is destroyed the same way). See docs/security.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial()
			if err != nil {
				return err
			}
			obj, err := c.OpenPinned(args[0], client.ModeDestroy)
			if err != nil {
				return fail("destroy: "+args[0], kDestroy, false, err)
			}
			switch o := obj.(type) {
			case *client.Map:
				err = o.Destroy()
			case *client.Program:
				err = o.Destroy()
			}
			if err != nil {
				obj.Close()
				return fail("destroy: "+args[0], kDestroy, false, err)
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
}
