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

// TestCompletePins: pin paths complete relative to the pin root, by the
// kind of object the command wants; directories continue without a space.
func TestCompletePins(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "pin", "mkdir", "--parents", "net/sub")
	d.mustRun(t, "map", "create", "hash", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--name", "allow", "--pin", "net/allow")
	d.mustRun(t, "map", "create", "array", "--key-size", "4", "--value-size", "8", "--max-entries", "1", "--pin", "nets")
	d.mustRun(t, "prog", "load", "--type", "socket_filter", "--asm", "testdata/count.s", "--map", "0=nets", "--pin", "net/filter")
	tests := []struct {
		name string
		args []string
		want string // completions then the directive line
	}{
		{name: "top", args: []string{"map", "dump", ""}, want: "net/\nnets\n:6\n"},
		{name: "maps in a dir", args: []string{"map", "lookup", "net/"}, want: "net/allow\nnet/sub/\n:6\n"},
		{name: "progs in a dir", args: []string{"prog", "dump", "net/"}, want: "net/filter\nnet/sub/\n:6\n"},
		{name: "any kind", args: []string{"destroy", "net/"}, want: "net/allow\nnet/filter\nnet/sub/\n:6\n"},
		{name: "dirs only", args: []string{"pin", "ls", "n"}, want: "net/\n:6\n"},
		{name: "keywords", args: []string{"map", "update", "nets", "k"}, want: "key\n:4\n"},
		{name: "prog after pinned", args: []string{"map", "update", "nets", "key", "0", "value", "pinned", "net/f"}, want: "net/filter\n:4\n"},
		{name: "exec flag with a name", args: []string{"exec", "--map", "x=net/a"}, want: "x=net/allow\n:4\n"},
		{name: "seccomp filter", args: []string{"seccomp", "exec", "--filter", "net/"}, want: "net/filter\nnet/sub/\n:6\n"},
		{name: "show keywords and pins", args: []string{"map", "show", "n"}, want: "name\nnet/\nnets\n:6\n"},
		{name: "map ids", args: []string{"map", "show", "id", ""}, want: "1\tallow\n2\n:4\n"},
		{name: "map names", args: []string{"map", "show", "name", "a"}, want: "allow\tid 1\n:4\n"},
		{name: "prog ids", args: []string{"prog", "show", "id", ""}, want: "3\tcount\n:4\n"},
		{name: "map types", args: []string{"map", "create", "per"}, want: "perf_event_array\npercpu_hash\npercpu_array\npercpu_cgroup_storage\n:4\n"},
		{name: "syscalls", args: []string{"seccomp", "exec", "--syscalls", "openat,sock"}, want: "openat,socket\nopenat,socketpair\n:6\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(t, append([]string{"__complete"}, tc.args...)...)
			if r.code != 0 || r.stdout != tc.want {
				t.Errorf("exit %d, completions %q, want %q; stderr %q", r.code, r.stdout, tc.want, r.stderr)
			}
		})
	}
}
