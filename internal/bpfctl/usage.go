package bpfctl

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bpfd-project/bpfd/internal/editdist"
)

// Usage errors at every level of the command tree exit 2 (ExitUsage) and
// suggest what was probably meant: an unknown command word ("map lokup"),
// a group command without its subcommand ("map"), an unknown help topic,
// an unknown flag ("--kye-size", "--mode" where the command has
// "--file-mode"). Cobra alone prints help and exits 0 for a group given
// an unknown word; fixGroups gives every group a RunE that refuses.

// foreignHints are hints for words users bring from other tools, by the
// group they are typed after.
var foreignHints = map[string]map[string]string{
	"pin": {
		"rm":     "pins are files: remove one with rm(1) under the pin root ('bpfctl pin ls' shows them); or destroy the object with 'bpfctl destroy PIN'",
		"unlink": "pins are files: remove one with rm(1) under the pin root ('bpfctl pin ls' shows them)",
		"get":    "open a pin with any bpfctl command that takes PIN, or pass it to a program with 'bpfctl exec --map PIN'",
	},
	"map": {
		"pin": "maps are pinned when created (map create --pin); pin an existing one again with 'bpfctl reopen PIN --mode rw --pin NEWPATH'",
	},
	"prog": {
		"pin": "programs are pinned when loaded (prog load --pin or --pin-dir); pin one again with 'bpfctl reopen PIN --mode r --pin NEWPATH'",
	},
}

// unknownCommand is the usage error for word typed after group cmd.
func unknownCommand(cmd *cobra.Command, word string) error {
	ce := &cliError{code: ExitUsage, msg: fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath()),
		usage: cmd.CommandPath()}
	if h := foreignHints[cmd.Name()][strings.ToLower(word)]; h != "" {
		ce.hint = h
	} else if s := cmd.SuggestionsFor(word); len(s) > 0 {
		ce.hint = "did you mean " + quoteList(s) + "?"
	} else {
		ce.hint = "commands: " + strings.Join(subcommandNames(cmd), ", ")
	}
	return ce
}

// subcommandNames lists cmd's available subcommands.
func subcommandNames(cmd *cobra.Command) []string {
	var out []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			out = append(out, c.Name())
		}
	}
	return out
}

func quoteList(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// groupRunE refuses a group command run without a known subcommand.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return &cliError{code: ExitUsage, msg: fmt.Sprintf("%q needs a command", cmd.CommandPath()),
			hint: "one of: " + strings.Join(subcommandNames(cmd), ", ")}
	}
	return unknownCommand(cmd, args[0])
}

// fixGroups makes every command with subcommands and no action of its
// own refuse unknown words and a missing subcommand (exit 2), at every
// level, instead of cobra's help-and-exit-0.
func fixGroups(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		fixGroups(c)
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = groupRunE
	}
	if cmd.SuggestionsMinimumDistance == 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	addSuggestions(cmd)
}

// helpCommand replaces cobra's, which exits 0 for an unknown topic.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help prints the help of any command: bpfctl help map update.",
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() && strings.HasPrefix(s.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(s.Name(), s.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd := c.Root()
			for _, w := range args {
				next := findSub(cmd, w)
				if next == nil {
					return unknownCommand(cmd, w)
				}
				cmd = next
			}
			return cmd.Help()
		},
	}
}

// findSub returns cmd's subcommand called (or aliased) name, or nil.
func findSub(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}

// flagError turns pflag's and cobra's flag errors into usage errors, with
// a suggestion for an unknown flag.
func flagError(cmd *cobra.Command, err error) error {
	ce := &cliError{code: ExitUsage, msg: err.Error()}
	var ne *pflag.NotExistError
	if errors.As(err, &ne) && ne.GetSpecifiedShortnames() == "" {
		if s := suggestFlags(cmd, ne.GetSpecifiedName()); len(s) > 0 {
			q := make([]string, len(s))
			for i, f := range s {
				q[i] = "--" + f
			}
			ce.hint = "did you mean " + strings.Join(q, " or ") + "?"
		}
	}
	return ce
}

// suggestFlags returns the names of cmd's flags close to name: within
// edit distance 2, starting with it, or containing it as a '-'-separated
// part (--mode for --file-mode).
func suggestFlags(cmd *cobra.Command, name string) []string {
	name = strings.ToLower(name)
	seen := map[string]bool{}
	var out []string
	visit := func(f *pflag.Flag) {
		if f.Hidden || seen[f.Name] || f.Name == "help" {
			return
		}
		n := strings.ToLower(f.Name)
		ok := editdist.Levenshtein(name, n) <= 2 || strings.HasPrefix(n, name) && len(name) >= 2
		for _, part := range []string{"-" + name, name + "-"} {
			ok = ok || len(name) >= 3 && strings.Contains(n, part)
		}
		if ok {
			seen[f.Name] = true
			out = append(out, f.Name)
		}
	}
	cmd.LocalFlags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	sort.Strings(out)
	return out
}

// commonSuggestions maps words users type from habit (other tools, other
// verbs) to the subcommand they mean, by group.
var commonSuggestions = map[string]map[string][]string{
	"map":  {"show": {"list", "ls", "get"}, "delete": {"remove", "rm", "del"}, "dump": {"cat"}, "update": {"set", "put"}},
	"prog": {"show": {"list", "ls"}, "run": {"test", "test-run", "exec"}, "dump": {"disasm", "disassemble"}},
	"pin":  {"ls": {"list", "show"}},
}

// addSuggestions sets SuggestFor of group's subcommands from
// commonSuggestions.
func addSuggestions(group *cobra.Command) {
	for _, c := range group.Commands() {
		c.SuggestFor = append(c.SuggestFor, commonSuggestions[group.Name()][c.Name()]...)
	}
}

var (
	reExclusive = regexp.MustCompile(`^if any flags in the group \[([^\]]*)\] are set none of the others can be; \[([^\]]*)\] were all set$`)
	reArgCount  = regexp.MustCompile(`^(accepts|requires at least|accepts at most|accepts between) .*arg\(s\)`)
)

// cobraUsage turns cobra's own errors (argument counts, flag groups,
// required flags) into usage errors that say what to type.
func cobraUsage(cmd *cobra.Command, err error) *cliError {
	msg := err.Error()
	ce := &cliError{code: ExitUsage, msg: msg}
	if m := reExclusive.FindStringSubmatch(msg); m != nil {
		set := strings.Fields(m[2])
		for i := range set {
			set[i] = "--" + set[i]
		}
		ce.msg = strings.Join(set, " and ") + " exclude each other: give one"
	}
	if cmd != nil && reArgCount.MatchString(msg) {
		ce.hint = "usage: " + cmd.UseLine()
	}
	return ce
}

// walk calls f with every command of the tree under c.
func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, s := range c.Commands() {
		walk(s, f)
	}
}
