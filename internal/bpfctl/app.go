// Package bpfctl is the implementation of the bpfctl command, the CLI of
// bpfd in the spirit of bpftool: it creates, inspects and pins maps and
// programs, runs programs, lists pins, and hands descriptors to other
// commands (exec). cmd/bpfctl is a thin main around Main; everything here
// is testable in process against an in-process daemon.
//
// Output is human-readable by default and JSON with -j/--json (-p/--pretty
// indents it), shaped like bpftool's where bpftool has the same command.
// Exit codes are documented in docs/bpfctl.md and listed as the Exit*
// constants.
package bpfctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/internal/defaults"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// Exit codes of bpfctl (docs/bpfctl.md). bpfctl exec exits with the
// child's status instead, once the child started.
const (
	ExitOK          = 0   // success
	ExitFailed      = 1   // the daemon or the system refused the operation
	ExitUsage       = 2   // bad command line: unknown command or flag, malformed bytes, sizes that do not fit the map
	ExitUnreachable = 3   // no daemon answered on the socket, or it speaks another protocol version
	ExitNotFound    = 4   // map element operations: no such key (lookup, delete, update --exist, getnext at the end)
	ExitCannotExec  = 126 // exec: the command was found but could not be started
	ExitNoCommand   = 127 // exec: the command was not found
)

// Main runs bpfctl with args (without the program name), reading stdin and
// writing stdout and stderr, and returns the exit code. The environment is
// the process's (BPFD_SOCKET).
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv}
	return a.Run(args)
}

// App is one bpfctl invocation's environment. The zero value is not
// usable: set the streams and Getenv. An App runs one command (Run) and is
// not safe for concurrent use.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment (BPFD_SOCKET).
	Getenv func(string) string
	// Owner formats a file owner for pin ls; nil: "user:group" names
	// from the user database, numbers where a name is unknown.
	Owner func(uid, gid uint32) string
	// Uptime formats the daemon's uptime for status; nil: a duration
	// and the start time. (Tests make it deterministic.)
	Uptime func(client.Status) string

	// EUID, if not nil, replaces os.Geteuid for choosing default sockets.
	EUID *int
	// Time formats times shown by show commands (unix seconds); nil:
	// local time, ISO 8601. (Tests make it deterministic.)
	Time func(unixSec int64) string

	socket  string
	json    bool
	pretty  bool
	version bool
	conn    *client.Conn
	keep    []io.Closer // objects held until the command ends
}

// Run executes the command line args and returns the exit code. Errors
// are printed on Stderr ("bpfctl: ..."), or as {"error": ...} on Stdout
// with --json, as bpftool does.
func (a *App) Run(args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	for _, o := range a.keep {
		o.Close()
	}
	a.keep = nil
	if a.conn != nil {
		a.conn.Close()
		a.conn = nil
	}
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		// exec: the child's status, already reported by the child.
		return ee.code
	}
	var ce *cliError
	if !errors.As(err, &ce) {
		// Cobra's own errors: argument count, required flags, unknown
		// command words after a command taking no arguments.
		ce = cobraUsage(cmd, err)
	}
	path := "bpfctl"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	a.printError(ce, path)
	return ce.code
}

func (a *App) printError(ce *cliError, cmdPath string) {
	if a.json {
		v := struct {
			Error string `json:"error"`
			Errno string `json:"errno,omitempty"`
			Hint  string `json:"hint,omitempty"`
			Exit  int    `json:"exit_code"`
		}{ce.msg, ce.errnoName(), ce.hint, ce.code}
		a.printJSON(v)
		return
	}
	fmt.Fprintln(a.Stderr, "bpfctl: "+ce.Error())
	if ce.log != "" {
		fmt.Fprint(a.Stderr, ce.log)
		if ce.log[len(ce.log)-1] != '\n' {
			fmt.Fprintln(a.Stderr)
		}
	}
	if ce.code == ExitUsage {
		if ce.usage != "" {
			cmdPath = ce.usage
		}
		fmt.Fprintf(a.Stderr, "Run '%s --help' for usage.\n", cmdPath)
	}
}

func (a *App) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "bpfctl",
		Short: "Control bpfd: maps, programs, pins and descriptors",
		Long: `bpfctl talks to bpfd, the userspace bpf(2) daemon, over its socket
(--socket, $BPFD_SOCKET, or the default: /run/bpfd/bpfd.sock as root; for
other users their own $XDG_RUNTIME_DIR/bpfd/bpfd.sock, then the system
socket /run/bpfd/bpfd.sock).

Objects are named by pins: files under the daemon's pin root. A relative
pin path is taken under the pin root. Whoever can open a pin file gets the
object with the access its open mode allows (read, write or both).

Exit codes: 0 ok, 1 operation failed, 2 usage, 3 daemon unreachable,
4 no such key; exec exits with the command's own status.`,
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.version {
				if len(args) > 0 {
					return usagef("--version takes no arguments")
				}
				return a.runVersion()
			}
			return groupRunE(cmd, args)
		},
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "daemon socket path (default $BPFD_SOCKET, else your own bpfd's, else /run/bpfd/bpfd.sock)")
	root.PersistentFlags().BoolVarP(&a.json, "json", "j", false, "print JSON")
	root.PersistentFlags().BoolVarP(&a.pretty, "pretty", "p", false, "print indented JSON (implies --json)")
	root.Flags().BoolVar(&a.version, "version", false, "print bpfctl's and the daemon's versions (as 'bpfctl version')")
	root.PersistentPreRun = func(*cobra.Command, []string) {
		if a.pretty {
			a.json = true
		}
	}
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(a.mapCommand(), a.progCommand(), a.pinCommand(), a.reopenCommand(),
		a.execCommand(), a.seccompCommand(), a.destroyCommand(), a.statusCommand(), a.versionCommand(),
		a.linkCommand(), a.lineageCommand(), a.revokeCommand(), a.daemonCommand())
	root.SetHelpCommand(helpCommand())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	fixGroups(root)
	a.addCompletions(root)
	return root
}

// sockets are the socket paths bpfctl tries, in order: --socket, else
// $BPFD_SOCKET, else the defaults (defaults.ClientSockets).
func (a *App) sockets() []string {
	if a.socket != "" {
		return []string{a.socket}
	}
	return defaults.ClientSockets(a.euid(), a.Getenv)
}

func (a *App) euid() int {
	if a.EUID != nil {
		return *a.EUID
	}
	return os.Geteuid()
}

// socketPath is the socket bpfctl uses: the one it connected to, or the
// first it would try.
func (a *App) socketPath() string {
	if a.conn != nil {
		return a.conn.Socket()
	}
	return a.sockets()[0]
}

// dial returns the connection to the daemon, dialing it on first use:
// the sockets of a.sockets in order, the first that answers.
func (a *App) dial() (*client.Conn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	var tried []string
	var first error
	for _, path := range a.sockets() {
		c, err := client.Dial(path)
		if err == nil {
			a.conn = c
			return c, nil
		}
		if errors.Is(err, client.ErrNotSupported) {
			return nil, &cliError{code: ExitUnreachable, msg: "cannot talk to bpfd at " + path + ": " + errText(err),
				errno: errnoOf(err), hint: "bpfctl and bpfd speak different protocol versions; use matching builds"}
		}
		if first == nil {
			first = err
		}
		tried = append(tried, path+": "+errText(err))
	}
	msg := "cannot talk to bpfd at " + tried[0]
	if len(tried) > 1 {
		msg = "cannot talk to bpfd: tried " + strings.Join(tried, "; then ")
	}
	return nil, &cliError{code: ExitUnreachable, msg: msg, errno: errnoOf(first),
		hint: "is bpfd running? Point bpfctl at its socket with --socket or $BPFD_SOCKET"}
}

// printJSON writes v as one line of JSON (indented with --pretty).
func (a *App) printJSON(v any) {
	var b []byte
	var err error
	if a.pretty {
		b, err = json.MarshalIndent(v, "", "    ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		// Only our own types are marshalled; this is a bug.
		panic(err)
	}
	a.Stdout.Write(append(b, '\n'))
}

// printf writes human output.
func (a *App) printf(format string, args ...any) { fmt.Fprintf(a.Stdout, format, args...) }

// owner formats uid:gid for pin ls.
func (a *App) owner(uid, gid uint32) string {
	if a.Owner != nil {
		return a.Owner(uid, gid)
	}
	u := strconv.FormatUint(uint64(uid), 10)
	g := strconv.FormatUint(uint64(gid), 10)
	if pw, err := user.LookupId(u); err == nil {
		u = pw.Username
	}
	if gr, err := user.LookupGroupId(g); err == nil {
		g = gr.Name
	}
	return u + ":" + g
}

// CommandTree returns bpfctl's command tree (for generated documentation:
// man pages, the docs test). Running it is not supported; use Main.
func CommandTree() *cobra.Command {
	a := &App{Stdin: os.Stdin, Stdout: io.Discard, Stderr: io.Discard, Getenv: os.Getenv}
	return a.rootCommand()
}
