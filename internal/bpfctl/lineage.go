package bpfctl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// lineageOwner is what lineage and revoke need of an opened pin.
type lineageOwner interface {
	io.Closer
	Lineage() ([]client.LineageNode, error)
	RevokeNode(node uint64) (int, error)
}

// openOwner opens PIN for its destroy right (see destroyCommand).
func (a *App) openOwner(op, pin string) (lineageOwner, error) {
	c, err := a.dial()
	if err != nil {
		return nil, err
	}
	obj, err := c.OpenPinned(pin, client.ModeDestroy)
	if err != nil {
		return nil, fail(op+": "+pin, kDestroy, false, err)
	}
	return obj.(lineageOwner), nil
}

// lineageJSON is one node in `bpfctl lineage --json`.
type lineageJSON struct {
	ID      uint64   `json:"id"`
	Parent  uint64   `json:"parent,omitempty"`
	Kind    string   `json:"kind"`
	Mode    string   `json:"mode"`
	UID     uint32   `json:"uid"`
	Live    bool     `json:"live"`
	Handles int      `json:"handles,omitempty"`
	Path    string   `json:"path,omitempty"`
	Uses    int      `json:"uses,omitempty"`
	Objects []uint32 `json:"objects,omitempty"`
}

func (a *App) lineageCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "lineage PIN",
		Short: "Show who holds the pinned object: every descriptor and pin derived from it",
		Long: `Open PIN for its destroy right (you must own the pin file, and the pin must
have been made from the object's creating descriptor) and print the object's
lineage as a tree: the creating descriptor at the root; below a descriptor,
the descriptors reopened from it and the pins made through it; below a pin,
the descriptors opened from it. USED BY lists the programs and links (#id)
made through a node, and the program-array slots and seccomp attachments:
revoking the node destroys them too. A node marked dead (a closed
descriptor, one of an earlier run of the daemon, an unlinked pin) is shown
while something below it lives. Revoke a branch with 'bpfctl revoke PIN
NODE'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			obj, err := a.openOwner("lineage", args[0])
			if err != nil {
				return err
			}
			defer obj.Close()
			nodes, err := obj.Lineage()
			if err != nil {
				return fail("lineage: "+args[0], kDestroy, false, err)
			}
			if a.json {
				out := make([]lineageJSON, 0, len(nodes))
				for _, n := range nodes {
					out = append(out, lineageJSON{ID: n.ID, Parent: n.Parent, Kind: kindOf(n), Mode: n.Mode.String(),
						UID: n.UID, Live: n.Live, Handles: n.Handles, Path: n.Path, Uses: n.Uses, Objects: n.Objects})
				}
				a.printJSON(out)
				return nil
			}
			return printLineage(a.Stdout, nodes)
		},
	}
}

func kindOf(n client.LineageNode) string {
	if n.Pin {
		return "pin"
	}
	return "descriptor"
}

// printLineage prints nodes (parents first) as an indented tree.
func printLineage(w io.Writer, nodes []client.LineageNode) error {
	children := map[uint64][]client.LineageNode{}
	known := map[uint64]bool{}
	for _, n := range nodes {
		known[n.ID] = true
	}
	var roots []client.LineageNode
	for _, n := range nodes {
		if n.Parent == 0 || !known[n.Parent] {
			roots = append(roots, n)
		} else {
			children[n.Parent] = append(children[n.Parent], n)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tKIND\tMODE\tUID\tSTATE\tHANDLES\tPATH\tUSED BY")
	var walk func(n client.LineageNode, depth int)
	walk = func(n client.LineageNode, depth int) {
		state := "live"
		if !n.Live {
			state = "dead"
		}
		handles := "-"
		if !n.Pin {
			handles = strconv.Itoa(n.Handles)
		}
		usedBy := "-"
		if n.Uses > 0 {
			var ids []string
			for _, id := range n.Objects {
				ids = append(ids, "#"+strconv.FormatUint(uint64(id), 10))
			}
			if other := n.Uses - len(n.Objects); other > 0 {
				ids = append(ids, strconv.Itoa(other)+" slot/attachment(s)")
			}
			usedBy = strings.Join(ids, ",")
		}
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", strings.Repeat("  ", depth), n.ID, kindOf(n),
			n.Mode, n.UID, state, handles, dash(n.Path), usedBy)
		for _, ch := range children[n.ID] {
			walk(ch, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return tw.Flush()
}

func (a *App) revokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke PIN NODE",
		Short: "Take back a branch of what was lent from the pinned object",
		Long: `Open PIN for its destroy right (as 'bpfctl lineage') and revoke NODE, a node
id from 'bpfctl lineage PIN', with everything below it: descriptors stop
working in every process, pins are removed (also from the daemon's saved
state, so a restart does not bring them back). This works after a daemon
restart too, when the process that lent a descriptor is gone.`,
		Example: "  bpfctl lineage ports\n  bpfctl revoke ports 7",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || node == 0 {
				return usagef("NODE must be a node id from 'bpfctl lineage', not %q", args[1])
			}
			obj, err := a.openOwner("revoke", args[0])
			if err != nil {
				return err
			}
			defer obj.Close()
			n, err := obj.RevokeNode(node)
			if err != nil {
				ce := fail("revoke: "+args[0]+" node "+args[1], kDestroy, false, err).(*cliError)
				if ce.errno == unix.ENOENT {
					ce.code = ExitNotFound
					ce.hint = "no such node in the object's lineage; list them with 'bpfctl lineage " + args[0] + "'"
				}
				return ce
			}
			if a.json {
				a.printJSON(struct {
					Revoked int `json:"revoked"`
				}{n})
				return nil
			}
			a.printf("revoked %d node(s)\n", n)
			return nil
		},
	}
}
