package bpfctl

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// walk calls f with every command of the tree under c.
func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, s := range c.Commands() {
		walk(s, f)
	}
}

// runApp runs bpfctl in process with no daemon (usage errors never dial).
func runApp(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := a.Run(append([]string{"--socket", filepath.Join(t.TempDir(), "none.sock")}, args...))
	return result{code, out.String(), errb.String()}
}

// TestUnknownEverywhere: at every level of the command tree, an unknown
// command word, a missing subcommand and an unknown flag exit 2 and say
// which command's help to read.
func TestUnknownEverywhere(t *testing.T) {
	a := &App{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	root := a.rootCommand()
	n := 0
	walk(root, func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		path := strings.Fields(c.CommandPath())[1:]
		n++
		t.Run(strings.Join(append([]string{"bpfctl"}, path...), "_"), func(t *testing.T) {
			r := runApp(t, append(append([]string{}, path...), "--no-such-flag")...)
			if r.code != ExitUsage || !strings.Contains(r.stderr, "unknown flag: --no-such-flag") ||
				!strings.Contains(r.stderr, "Run '"+c.CommandPath()+" --help'") {
				t.Errorf("unknown flag: exit %d, stderr %q", r.code, r.stderr)
			}
			if !c.HasSubCommands() {
				return
			}
			r = runApp(t, append(append([]string{}, path...), "no-such-command")...)
			if r.code != ExitUsage || !strings.Contains(r.stderr, `unknown command "no-such-command" for "`+c.CommandPath()+`"`) {
				t.Errorf("unknown command: exit %d, stderr %q", r.code, r.stderr)
			}
			r = runApp(t, path...)
			if r.code != ExitUsage || r.stdout != "" {
				t.Errorf("missing command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = runApp(t, append(append([]string{"help"}, path...), "no-such-command")...)
			if r.code != ExitUsage {
				t.Errorf("help of an unknown command: exit %d, stderr %q", r.code, r.stderr)
			}
		})
	})
	if n < 25 {
		t.Fatalf("walked %d commands; the tree is larger", n)
	}
}

func TestSuggestions(t *testing.T) {
	tests := []struct {
		name string
		args []string
		hint string
	}{
		{name: "typo", args: []string{"map", "lokup"}, hint: `did you mean "lookup"?`},
		{name: "habit", args: []string{"map", "list"}, hint: `did you mean "show"?`},
		{name: "prog habit", args: []string{"prog", "list"}, hint: `did you mean "show"?`},
		{name: "top level", args: []string{"statsu"}, hint: `did you mean "status"?`},
		{name: "pin rm", args: []string{"pin", "rm", "x"}, hint: "pins are files"},
		{name: "flag typo", args: []string{"map", "create", "hash", "--max-entires", "1"}, hint: "did you mean --max-entries?"},
		{name: "renamed flag", args: []string{"prog", "load", "x.o", "--pin-dir", "d", "--mode", "0600"}, hint: "did you mean --file-mode?"},
		{name: "global flag typo", args: []string{"status", "--jsno"}, hint: "did you mean --json?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runApp(t, tc.args...)
			if r.code != ExitUsage || !strings.Contains(r.stderr, tc.hint) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, tc.hint)
			}
		})
	}
}

var (
	reGoldenCmd = regexp.MustCompile(`^\$ bpfctl (.*)$`)
	reHintFlag  = regexp.MustCompile(`(^|[\s(])(--[a-z][a-z0-9-]*)`)
	reOtherTool = regexp.MustCompile(`(bpfctl|bpfd) [a-z -]*$`)
)

// TestHintsNameOwnFlags: every flag an error message of the golden
// transcripts names is a flag of the command that failed, unless the
// message names another command ("bpfctl map freeze", "start bpfd with
// --pin-root") just before it.
func TestHintsNameOwnFlags(t *testing.T) {
	a := &App{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	root := a.rootCommand()
	files, err := filepath.Glob("testdata/golden/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cmd *cobra.Command
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Text()
			if m := reGoldenCmd.FindStringSubmatch(line); m != nil {
				c, _, err := root.Find(strings.Fields(m[1]))
				if err != nil {
					t.Fatalf("%s: %q: %v", f, m[1], err)
				}
				cmd = c
				continue
			}
			if !strings.HasPrefix(line, "stderr: bpfctl: ") || cmd == nil || strings.Contains(line, "unknown flag") {
				continue
			}
			for _, loc := range reHintFlag.FindAllStringSubmatchIndex(line, -1) {
				flag := line[loc[4]+2 : loc[5]]
				before := line[:loc[4]]
				if reOtherTool.MatchString(before) {
					continue
				}
				checked++
				if cmd.Flags().Lookup(flag) == nil && cmd.InheritedFlags().Lookup(flag) == nil {
					t.Errorf("%s: %q names --%s, which %q does not have", f, line, flag, cmd.CommandPath())
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no flag named in any error message: the test checks nothing")
	}
}
