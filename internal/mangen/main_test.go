package main

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/internal/bpfctl"
	"github.com/bpfd-project/bpfd/internal/daemon"
)

// TestGenerate: a page for bpfd naming every flag, and one for bpfctl and
// each of its commands.
func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bpfd.8"))
	if err != nil {
		t.Fatal(err)
	}
	daemon.FlagSet().VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(b), `\fB--`+f.Name+`\fP`) {
			t.Errorf("bpfd.8 does not document --%s", f.Name)
		}
	})
	n := 0
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			visit(s)
		}
		if !c.IsAvailableCommand() && c.HasParent() {
			return
		}
		n++
		page := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		if _, err := os.Stat(filepath.Join(dir, page)); err != nil {
			t.Errorf("no man page for %q: %v", c.CommandPath(), err)
		}
	}
	visit(bpfctl.CommandTree())
	if n < 25 {
		t.Fatalf("only %d bpfctl commands", n)
	}
}

// TestMakeInstall runs make install into a temporary DESTDIR and checks
// what lands there: binaries, man pages, completions, units, docs and the
// sample config, which a second install does not overwrite.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries; skipped with -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dest, bin := t.TempDir(), t.TempDir()
	install := func() string {
		cmd := exec.Command("make", "-s", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+bin)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	for _, f := range []string{
		"usr/bin/bpfd", "usr/bin/bpfctl",
		"usr/share/man/man8/bpfd.8", "usr/share/man/man1/bpfctl.1", "usr/share/man/man1/bpfctl-map-update.1",
		"usr/share/bash-completion/completions/bpfctl", "usr/share/zsh/site-functions/_bpfctl",
		"usr/share/fish/vendor_completions.d/bpfctl.fish",
		"lib/systemd/system/bpfd.service", "usr/share/doc/bpfd/bpfctl.md", "usr/share/doc/bpfd/bpfd.conf.sample",
		"etc/bpfd/bpfd.conf",
	} {
		if st, err := os.Stat(filepath.Join(dest, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dest, "usr/share/bash-completion/completions/bpfctl"))
	if !strings.Contains(string(b), "__start_bpfctl") {
		t.Errorf("bash completion script does not complete bpfctl")
	}
	conf := filepath.Join(dest, "etc/bpfd/bpfd.conf")
	if err := os.WriteFile(conf, []byte("log-level = debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := install(); !strings.Contains(out, "keeping existing") {
		t.Errorf("second install did not say it kept the config: %s", out)
	}
	if b, _ := os.ReadFile(conf); string(b) != "log-level = debug\n" {
		t.Errorf("second install overwrote the config: %q", b)
	}
}

// TestSampleConfig: the sample config parses once uncommented, and
// documents every key bpfd knows.
func TestSampleConfig(t *testing.T) {
	b, err := os.ReadFile("../../etc/bpfd/bpfd.conf")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") && strings.Contains(l, " = ") && !strings.HasPrefix(l, "# ") {
			lines = append(lines, strings.TrimPrefix(l, "#"))
		}
	}
	kv, err := daemon.ParseConfig([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatalf("uncommented sample: %v", err)
	}
	for _, k := range daemon.ConfigKeys() {
		if _, ok := kv[k]; !ok {
			t.Errorf("sample config does not mention %q", k)
		}
	}
}
