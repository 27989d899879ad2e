package bpfctl

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Shell completion (bpfctl completion bash|zsh|fish|powershell): commands,
// flags, map and program types, syscall names, and pin paths relative to
// the daemon's pin root, filtered by the kind of object a command wants.
// Completing a pin path asks the daemon for its pin root (STATUS); with no
// daemon reachable nothing is offered.

// pinArgs says which commands take a pin as their first argument, and of
// what kind ("map", "prog", "" for either, "dir" for directories).
var pinArgs = map[string]string{
	"bpfctl map show": "map", "bpfctl map lookup": "map",
	"bpfctl map update": "map", "bpfctl map delete": "map", "bpfctl map getnext": "map",
	"bpfctl map dump": "map", "bpfctl map freeze": "map",
	"bpfctl prog show": "prog", "bpfctl prog dump": "prog",
	"bpfctl prog run": "prog",
	"bpfctl reopen":   "", "bpfctl destroy": "", "bpfctl pin ls": "dir", "bpfctl link show": "link",
}

// pinFlags are flags whose value is a pin (possibly "[NAME=]PIN[:mode]"),
// by command path, with the kind of object.
var pinFlags = map[string]map[string]string{
	"bpfctl exec":         {"map": "map", "prog": "prog"},
	"bpfctl seccomp exec": {"filter": "prog", "map": "map", "prog": "prog"},
	"bpfctl prog load":    {"map": "map", "pin-dir": "dir"},
}

// elemWords are the keywords of map element commands after the pin.
var elemWords = map[string][]string{
	"bpfctl map lookup":  {"key"},
	"bpfctl map delete":  {"key"},
	"bpfctl map getnext": {"key"},
	"bpfctl map update":  {"key", "value", "any", "exist", "noexist"},
}

// addCompletions installs the completion functions of the tree under root.
func (a *App) addCompletions(root *cobra.Command) {
	walk(root, func(c *cobra.Command) {
		path := c.CommandPath()
		if kind, ok := pinArgs[path]; ok && c.ValidArgsFunction == nil {
			words := elemWords[path]
			show := c.Name() == "show"
			c.ValidArgsFunction = func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				switch {
				case show && len(args) == 1 && (args[0] == "id" || args[0] == "name"):
					return a.completeObjects(kind, args[0], toComplete), cobra.ShellCompDirectiveNoFileComp
				case show && len(args) == 1 && args[0] == "pinned":
					return a.completePins(toComplete, kind)
				case show && len(args) > 0:
					return nil, cobra.ShellCompDirectiveNoFileComp
				case show && len(args) == 0:
					pins, dir := a.completePins(toComplete, kind)
					return append(prefixed([]string{"id", "name", "pinned"}, toComplete), pins...), dir
				case len(args) == 0:
					return a.completePins(toComplete, kind)
				case len(args) > 0 && args[len(args)-1] == "pinned":
					return a.completePins(toComplete, "prog")
				case len(words) > 0 && !isByteWord(toComplete):
					return prefixed(words, toComplete), cobra.ShellCompDirectiveNoFileComp
				}
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
		}
		for flag, kind := range pinFlags[path] {
			kind := kind
			c.RegisterFlagCompletionFunc(flag, func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				// "[NAME=]PIN[:mode]": complete the pin after NAME=.
				head := ""
				if i := strings.IndexByte(toComplete, '='); i >= 0 && !strings.Contains(toComplete[:i], "/") {
					head, toComplete = toComplete[:i+1], toComplete[i+1:]
				}
				out, dir := a.completePins(toComplete, kind)
				for i := range out {
					out[i] = head + out[i]
				}
				return out, dir
			})
		}
	})
}

// isByteWord reports whether w looks like a key or value byte (a number).
func isByteWord(w string) bool { return w != "" && w[0] >= '0' && w[0] <= '9' }

func prefixed(words []string, p string) []cobra.Completion {
	var out []cobra.Completion
	for _, w := range words {
		if strings.HasPrefix(w, p) {
			out = append(out, w)
		}
	}
	return out
}

// completePins lists pins (of kind: "map", "prog", "" for both, "dir" for
// directories only) and directories under the pin root whose path,
// relative to the root, starts with toComplete. Directories end in '/'
// and ask the shell not to add a space, so completion continues inside.
func (a *App) completePins(toComplete, kind string) ([]cobra.Completion, cobra.ShellCompDirective) {
	none := cobra.ShellCompDirectiveNoFileComp
	if filepath.IsAbs(toComplete) {
		return nil, cobra.ShellCompDirectiveDefault
	}
	root, err := a.pinRoot()
	if err != nil {
		return nil, none
	}
	dir, prefix := filepath.Split(toComplete)
	ents, err := os.ReadDir(filepath.Join(root, dir))
	if err != nil {
		return nil, none
	}
	var out []cobra.Completion
	nospace := false
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || strings.HasPrefix(name, ".") && !strings.HasPrefix(prefix, ".") {
			continue
		}
		rel := dir + name
		if e.IsDir() {
			out = append(out, rel+"/")
			nospace = true
			continue
		}
		if kind == "dir" || !e.Type().IsRegular() {
			continue
		}
		if kind != "" {
			kv, err := readPinContent(filepath.Join(root, rel))
			if err != nil || kv["type"] != kind {
				continue
			}
		}
		out = append(out, rel)
	}
	sort.Strings(out)
	if nospace {
		none |= cobra.ShellCompDirectiveNoSpace
	}
	return out, none
}

// completeObjects lists the ids ("id") or names ("name") of the objects
// of kind the caller may see, with the other as description.
func (a *App) completeObjects(kind, what, toComplete string) []cobra.Completion {
	c, err := a.dial()
	if err != nil {
		return nil
	}
	recs, err := c.Objects(client.ObjectFilter{Kind: kind})
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	seen := map[string]bool{}
	for _, r := range recs {
		id := strconv.FormatUint(uint64(r.ID), 10)
		w, desc := id, r.Name
		if what == "name" {
			w, desc = r.Name, "id "+id
		}
		if w == "" || seen[w] || !strings.HasPrefix(w, toComplete) {
			continue
		}
		seen[w] = true
		out = append(out, cobra.CompletionWithDesc(w, desc))
	}
	return out
}
