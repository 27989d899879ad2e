package bpfctl

import (
	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
)

func (a *App) destroyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy PIN",
		Short: "Destroy a pinned object: revoke every descriptor of it and remove all its pins",
		Long: `Open PIN with read and write access (the pin must grant both) and destroy
its object: every descriptor and handle of it, in every process, stops
working and every pin file of it is removed, at once. Programs and seccomp
attachments that use the object keep it until they go.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial()
			if err != nil {
				return err
			}
			obj, err := c.OpenPinned(args[0], client.ModeReadWrite)
			if err != nil {
				return fail("destroy: "+args[0], kOpen, false, err)
			}
			switch o := obj.(type) {
			case *client.Map:
				err = o.Destroy()
			case *client.Program:
				err = o.Destroy()
			}
			if err != nil {
				obj.Close()
				return fail("destroy: "+args[0], kOther, false, err)
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
}
