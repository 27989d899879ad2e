package bpfctl

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// The docs test: every Markdown file of the repository links only to
// files of the repository that exist (no URL, nothing outside the tree),
// and every bpfctl command the docs show parses against the real command
// tree: examples ("$ bpfctl ..." in code blocks) completely — command
// path, flags, flag values, argument counts, required flags; synopses
// (code lines starting "bpfctl ", inline `bpfctl ...` spans, with
// [optional] and A|B metasyntax) by their command path and every --flag
// they name.

const repoRoot = "../.."

// markdownFiles returns the repository's Markdown files (not testdata's
// or third-party corpora).
func markdownFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "bin" || strings.HasPrefix(d.Name(), ".") && p != repoRoot) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 4 {
		t.Fatalf("found only %v", out)
	}
	return out
}

var (
	reMdLink   = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	reRefLink  = regexp.MustCompile(`(?m)^\s*\[[^\]]+\]:\s*(\S+)`)
	reCodeSpan = regexp.MustCompile("`([^`]+)`")
	reMdPath   = regexp.MustCompile(`^(\.\./|\./)?[A-Za-z0-9_./-]+\.md(#.*)?$`)
)

func TestDocsLinks(t *testing.T) {
	absRoot, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range markdownFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := stripCodeBlocks(string(b))
		var targets []string
		for _, m := range reMdLink.FindAllStringSubmatch(text, -1) {
			targets = append(targets, m[1])
		}
		for _, m := range reRefLink.FindAllStringSubmatch(text, -1) {
			targets = append(targets, m[1])
		}
		// Paths to Markdown files written as code are references too.
		for _, m := range reCodeSpan.FindAllStringSubmatch(text, -1) {
			if reMdPath.MatchString(m[1]) {
				targets = append(targets, m[1])
			}
		}
		rel, _ := filepath.Rel(repoRoot, f)
		for _, target := range targets {
			checked++
			if u, err := url.Parse(target); err == nil && u.Scheme != "" {
				t.Errorf("%s: link %q points outside the repository", rel, target)
				continue
			}
			path, _, _ := strings.Cut(target, "#")
			if path == "" {
				continue // an anchor in the same file
			}
			abs := filepath.Join(filepath.Dir(f), path)
			if a, err := filepath.Abs(abs); err != nil || !strings.HasPrefix(a+"/", absRoot+"/") {
				t.Errorf("%s: link %q points outside the repository", rel, target)
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s: link %q does not resolve: %v", rel, target, err)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d links", checked)
	}
}

// stripCodeBlocks blanks fenced code blocks (links there are code).
func stripCodeBlocks(s string) string {
	var sb strings.Builder
	in := false
	for _, l := range strings.SplitAfter(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			in = !in
			sb.WriteString("\n")
			continue
		}
		if in {
			sb.WriteString("\n")
			continue
		}
		sb.WriteString(l)
	}
	return sb.String()
}

// shellWords splits a command line as sh would (quotes, backslashes), without
// expansions. It reports false for an unterminated quote.
func shellWords(s string) ([]string, bool) {
	var out []string
	var cur strings.Builder
	have := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, have = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			have = true
		case c == ' ' || c == '\t':
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		case c == '#' && !have:
			return out, quote == 0 // a comment
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out, quote == 0
}

// docCommand is a bpfctl command line found in a doc.
type docCommand struct {
	file    string
	line    int
	text    string
	example bool // "$ bpfctl ...": must parse completely
}

// docCommands extracts the bpfctl command lines of a Markdown file.
func docCommands(f string) ([]docCommand, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	var out []docCommand
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	inBlock := false
	n := 0
	var pending *docCommand
	for sc.Scan() {
		n++
		line := sc.Text()
		if pending != nil {
			pending.text += " " + strings.TrimSpace(line)
			if strings.HasSuffix(pending.text, "\\") {
				pending.text = strings.TrimSuffix(pending.text, "\\")
				continue
			}
			out = append(out, *pending)
			pending = nil
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		if inBlock {
			l := strings.TrimSpace(line)
			example := strings.HasPrefix(l, "$ bpfctl ")
			if example {
				l = strings.TrimPrefix(l, "$ ")
			}
			if !strings.HasPrefix(l, "bpfctl ") && l != "bpfctl" {
				continue
			}
			dc := docCommand{file: f, line: n, text: l, example: example}
			if strings.HasSuffix(l, "\\") {
				dc.text = strings.TrimSuffix(l, "\\")
				pending = &dc
				continue
			}
			out = append(out, dc)
			continue
		}
		for _, m := range reCodeSpan.FindAllStringSubmatch(line, -1) {
			if strings.HasPrefix(m[1], "bpfctl ") {
				out = append(out, docCommand{file: f, line: n, text: m[1]})
			}
		}
	}
	return out, sc.Err()
}

var reSynopsisFlag = regexp.MustCompile(`(?:^|[\s\[(|])(--[a-z][a-z0-9-]*)`)

// checkSynopsis checks a synopsis line: its command path exists (the words
// before the first placeholder or option) and each --flag is the
// command's.
func checkSynopsis(dc docCommand) (errs []string) {
	root := CommandTree()
	words := strings.Fields(dc.text)[1:]
	cmd := root
	for _, w := range words {
		if alts := strings.Split(w, "|"); len(alts) > 1 {
			// "show|info": every alternative a subcommand.
			var next *cobra.Command
			for _, a := range alts {
				if next = findSub(cmd, a); next == nil {
					break
				}
			}
			if next == nil {
				break
			}
			cmd = next
			continue
		}
		if strings.HasPrefix(w, "-") || strings.ContainsAny(w, "[]().=/") || strings.ToUpper(w) == w {
			break
		}
		next := findSub(cmd, w)
		if next == nil {
			if cmd.HasSubCommands() && cmd.RunE != nil && len(cmd.Commands()) > 0 && !isPositional(cmd) {
				errs = append(errs, fmt.Sprintf("%s:%d: %q: %q is not a command of %q", dc.file, dc.line, dc.text, w, cmd.CommandPath()))
				return errs
			}
			break
		}
		cmd = next
	}
	for _, m := range reSynopsisFlag.FindAllStringSubmatch(dc.text, -1) {
		name := strings.TrimPrefix(m[1], "--")
		if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil && cmd.PersistentFlags().Lookup(name) == nil {
			errs = append(errs, fmt.Sprintf("%s:%d: %q: %q has no flag --%s", dc.file, dc.line, dc.text, cmd.CommandPath(), name))
		}
	}
	return errs
}

// isPositional reports whether cmd takes positional arguments of its own
// (a group's RunE only refuses them).
func isPositional(cmd *cobra.Command) bool { return !cmd.HasSubCommands() }

// checkExample parses an example command line completely, without
// running it.
func checkExample(dc docCommand) (errs []string) {
	args, ok := shellWords(dc.text)
	if !ok {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: unterminated quote", dc.file, dc.line, dc.text))
		return errs
	}
	args = args[1:]
	root := CommandTree()
	cmd, rest, err := root.Find(args)
	if err != nil {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: %v", dc.file, dc.line, dc.text, err))
		return errs
	}
	if cmd.RunE == nil && cmd.Run == nil {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: %q does nothing", dc.file, dc.line, dc.text, cmd.CommandPath()))
		return errs
	}
	if err := cmd.ParseFlags(rest); err != nil {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: %v", dc.file, dc.line, dc.text, err))
		return errs
	}
	pos := cmd.Flags().Args()
	if cmd.RunE != nil && cmd.Args != nil {
		if err := cmd.ValidateArgs(pos); err != nil {
			errs = append(errs, fmt.Sprintf("%s:%d: %q: %v", dc.file, dc.line, dc.text, err))
		}
	}
	if cmd.HasSubCommands() && len(pos) > 0 {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: unknown command %q for %q", dc.file, dc.line, dc.text, pos[0], cmd.CommandPath()))
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: %v", dc.file, dc.line, dc.text, err))
	}
	if err := cmd.ValidateFlagGroups(); err != nil {
		errs = append(errs, fmt.Sprintf("%s:%d: %q: %v", dc.file, dc.line, dc.text, err))
	}
	return errs
}

func TestDocsCommands(t *testing.T) {
	examples, synopses := 0, 0
	for _, f := range markdownFiles(t) {
		cmds, err := docCommands(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, f)
		for _, dc := range cmds {
			dc.file = rel
			if dc.example {
				examples++
				for _, e := range checkExample(dc) {
					t.Error(e)
				}
			} else {
				synopses++
				for _, e := range checkSynopsis(dc) {
					t.Error(e)
				}
			}
		}
	}
	if examples < 5 || synopses < 20 {
		t.Fatalf("found %d examples and %d synopses: the extraction is broken", examples, synopses)
	}
}

// TestDocsCommandsCatchMistakes: the checks above refuse what they are
// meant to refuse.
func TestDocsCommandsCatchMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		dc   docCommand
	}{
		{name: "unknown command", dc: docCommand{text: "bpfctl map lokup m key 1", example: true}},
		{name: "unknown flag", dc: docCommand{text: "bpfctl map create hash --mode 0600 --key-size 4 --value-size 4 --max-entries 1 --pin x", example: true}},
		{name: "missing required flag", dc: docCommand{text: "bpfctl map create hash --key-size 4", example: true}},
		{name: "too many args", dc: docCommand{text: "bpfctl status now", example: true}},
		{name: "synopsis flag", dc: docCommand{text: "bpfctl prog dump PIN [--ubpf]"}},
		{name: "synopsis command", dc: docCommand{text: "bpfctl map list [PIN]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := checkSynopsis
			if tc.dc.example {
				check = checkExample
			}
			if errs := check(tc.dc); len(errs) == 0 {
				t.Errorf("%q passed the check", tc.dc.text)
			}
		})
	}
}
