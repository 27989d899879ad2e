package bpfctl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

func (a *App) pinCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pin",
		Short: "List pins and make pin directories",
	}
	cmd.AddCommand(a.pinLsCommand(), a.pinMkdirCommand())
	return cmd
}

// pinRoot asks the daemon for its pin root.
func (a *App) pinRoot() (string, error) {
	c, err := a.dial()
	if err != nil {
		return "", err
	}
	st, err := c.Status()
	if err != nil {
		return "", fail("status", kOther, false, err)
	}
	if st.PinRoot == "" {
		return "", &cliError{code: ExitFailed, msg: "pins: " + errnoString(unix.EOPNOTSUPP), errno: unix.EOPNOTSUPP,
			hint: "the daemon has pins disabled; start bpfd with --pin-root"}
	}
	return st.PinRoot, nil
}

// pinEntry is one line of pin ls.
type pinEntry struct {
	Path  string `json:"path"`            // relative to the pin root
	Type  string `json:"type"`            // map, prog, dir, symlink, other, or ? if unreadable
	ID    uint32 `json:"id,omitempty"`    // daemon-wide object id
	Name  string `json:"name,omitempty"`  // object name
	Mode  string `json:"mode,omitempty"`  // access the pin grants: r, w or rw
	Perm  string `json:"perm"`            // file permission bits, octal
	UID   uint32 `json:"uid"`             // file owner
	GID   uint32 `json:"gid"`             // file group
	Owner string `json:"owner"`           // user:group
	Info  string `json:"info,omitempty"`  // map: "hash key 4B value 8B max_entries 4"
	Error string `json:"error,omitempty"` // why the content could not be read
}

// maxPinContent caps how much of a pin file pin ls reads.
const maxPinContent = 4096

// readPinContent parses the informational "key: value" lines the daemon
// writes into a pin file. The content is only displayed, never trusted.
func readPinContent(path string) (map[string]string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	buf := make([]byte, maxPinContent)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, err
	}
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(buf[:n]))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok {
			kv[k] = v
		}
	}
	return kv, nil
}

func pinEntryFor(root, path string, d fs.DirEntry, owner func(uid, gid uint32) string) pinEntry {
	rel, _ := filepath.Rel(root, path)
	e := pinEntry{Path: rel, Type: "other"}
	fi, err := d.Info()
	if err != nil {
		e.Type, e.Error = "?", err.Error()
		return e
	}
	e.Perm = fmt.Sprintf("%04o", fi.Mode().Perm())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = st.Uid, st.Gid
		e.Owner = owner(st.Uid, st.Gid)
	}
	switch {
	case fi.IsDir():
		e.Type = "dir"
		return e
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = "symlink"
		return e
	case !fi.Mode().IsRegular():
		return e
	}
	kv, err := readPinContent(path)
	if err != nil {
		e.Type, e.Error = "?", errText(err)
		return e
	}
	e.Type = kv["type"]
	if e.Type == "" {
		e.Type = "?"
	}
	if id, err := strconv.ParseUint(kv["id"], 10, 32); err == nil {
		e.ID = uint32(id)
	}
	e.Name, e.Mode = kv["name"], kv["mode"]
	if t, err := strconv.ParseUint(kv["map_type"], 10, 32); err == nil {
		e.Info = fmt.Sprintf("%s key %sB value %sB max_entries %s", mapTypeName(client.MapType(t)),
			kv["key_size"], kv["value_size"], kv["max_entries"])
		if f := kv["map_flags"]; f != "" && f != "0x0" && f != "0" {
			e.Info += " flags " + f
		}
	}
	return e
}

func (a *App) pinLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls [DIR]",
		Short: "List pins under the pin root (or DIR): path, type, id, name, mode, permissions, owner",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := a.pinRoot()
			if err != nil {
				return err
			}
			start := root
			if len(args) == 1 {
				start = args[0]
				if !filepath.IsAbs(start) {
					start = filepath.Join(root, start)
				}
			}
			entries := []pinEntry{}
			err = filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					if path == start {
						return err
					}
					rel, _ := filepath.Rel(root, path)
					entries = append(entries, pinEntry{Path: rel, Type: "?", Error: errText(err)})
					return nil
				}
				if path == start && d.IsDir() {
					return nil
				}
				entries = append(entries, pinEntryFor(root, path, d, a.owner))
				return nil
			})
			if err != nil {
				var pe *fs.PathError
				if errors.As(err, &pe) {
					err = &os.PathError{Op: "open", Path: pe.Path, Err: pe.Err}
				}
				return fail("ls", kOther, false, err)
			}
			if a.json {
				a.printJSON(entries)
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tTYPE\tID\tNAME\tMODE\tPERM\tOWNER\tINFO")
			for _, e := range entries {
				id := "-"
				if e.ID != 0 {
					id = strconv.FormatUint(uint64(e.ID), 10)
				}
				info := e.Info
				if e.Error != "" {
					info = e.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Path, e.Type, id, dash(e.Name), dash(e.Mode),
					dash(e.Perm), dash(e.Owner), info)
			}
			return tw.Flush()
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *App) pinMkdirCommand() *cobra.Command {
	var perm string
	var parents bool
	cmd := &cobra.Command{
		Use:   "mkdir DIR",
		Short: "Make a directory under the pin root, owned by you",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePerm("file-mode", perm)
			if err != nil {
				return err
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			dirs := []string{args[0]}
			if parents {
				dirs = nil
				for d := filepath.Clean(args[0]); d != "." && d != "/"; d = filepath.Dir(d) {
					dirs = append([]string{d}, dirs...)
				}
			}
			for i, d := range dirs {
				err := c.PinMkdir(d, p)
				if parents && errors.Is(err, unix.EEXIST) {
					continue
				}
				// With -p, directories above the pin root are not ours
				// to make: skip them (EINVAL: outside the root).
				if parents && i < len(dirs)-1 && filepath.IsAbs(d) && errors.Is(err, unix.EINVAL) {
					continue
				}
				if err != nil {
					return fail("mkdir "+d, kPin, false, err)
				}
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&perm, "file-mode", "0755", "permission bits of the directory (octal)")
	cmd.Flags().BoolVar(&parents, "parents", false, "make parent directories as needed; no error if the directory exists")
	return cmd
}

func (a *App) reopenCommand() *cobra.Command {
	var mode, newPin, perm string
	cmd := &cobra.Command{
		Use:   "reopen PIN --mode r|w|rw --pin NEWPATH",
		Short: "Pin the same object again with less access",
		Long: `Open PIN with access --mode (r, w or rw; never more than PIN grants) and pin
the resulting descriptor at NEWPATH with permission bits --file-mode. Whoever
opens NEWPATH gets at most --mode: give it to users who may only read, say.`,
		Example: "  bpfctl reopen ports --mode r --pin ports.ro --file-mode 0644",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseMode(mode)
			if err != nil {
				return err
			}
			p, err := parsePerm("file-mode", perm)
			if err != nil {
				return err
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			obj, err := c.OpenPinned(args[0], m)
			if err != nil {
				return fail("reopen "+args[0], kOpen, false, err)
			}
			defer obj.Close()
			if err := c.Pin(obj.(client.Pinner), newPin, p); err != nil {
				return fail("pin "+newPin, kPin, false, err)
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "access of the new pin: r, w or rw")
	cmd.Flags().StringVar(&newPin, "pin", "", "path of the new pin")
	cmd.Flags().StringVar(&perm, "file-mode", "0600", "permission bits of the new pin file")
	cmd.MarkFlagRequired("mode")
	cmd.MarkFlagRequired("pin")
	cmd.RegisterFlagCompletionFunc("mode", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"r", "w", "rw"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}
