// Package daemon is bpfd's main program: flags, environment, logging, the
// listening socket and signal handling around a demux.Server. cmd/bpfd is a
// thin wrapper so that all of this is testable.
//
// Flags:
//
//	--socket PATH       socket path (env BPFD_SOCKET; default /run/bpfd/bpfd.sock
//	                    as root, $XDG_RUNTIME_DIR/bpfd/bpfd.sock otherwise)
//	--log-level LEVEL   debug, info, warn, error (default info)
//	--log-format FMT    json or console (default console)
//	--version           print the version and exit
//
// A flag beats the environment, which beats the default.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/version"
	"github.com/bpfd-project/bpfd/pkg/demux"
)

// Exit codes of Run.
const (
	ExitOK    = 0
	ExitError = 1 // start-up or serving failure
	ExitUsage = 2 // bad flags
)

// ShutdownTimeout bounds how long a signalled daemon waits for in-flight
// requests before closing connections forcibly.
const ShutdownTimeout = 10 * time.Second

// Run runs the daemon with command-line args (without the program name)
// until SIGTERM or SIGINT, and returns the process exit code.
func Run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return Main(ctx, args, os.Getenv, os.Stdout, os.Stderr)
}

// Options are the daemon's resolved settings.
type Options struct {
	Socket    string
	LogLevel  string
	LogFormat string
	Version   bool
}

// ErrNoRuntimeDir: not root, no --socket or BPFD_SOCKET, and XDG_RUNTIME_DIR
// is unset, so there is no default socket path.
var ErrNoRuntimeDir = errors.New("XDG_RUNTIME_DIR is not set and not running as root: pass --socket or set BPFD_SOCKET")

// DefaultSocket returns the default socket path for a process with
// effective uid euid: /run/bpfd/bpfd.sock for root, else
// $XDG_RUNTIME_DIR/bpfd/bpfd.sock, or ErrNoRuntimeDir.
func DefaultSocket(euid int, getenv func(string) string) (string, error) {
	if euid == 0 {
		return "/run/bpfd/bpfd.sock", nil
	}
	d := getenv("XDG_RUNTIME_DIR")
	if d == "" {
		return "", ErrNoRuntimeDir
	}
	return filepath.Join(d, "bpfd", "bpfd.sock"), nil
}

// ParseOptions parses args with the environment from getenv: a flag beats
// BPFD_SOCKET, which beats DefaultSocket. Usage errors are written to
// stderr.
func ParseOptions(args []string, getenv func(string) string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("bpfd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Socket, "socket", "", "socket path (env BPFD_SOCKET)")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.LogFormat, "log-format", "console", "log format: json or console")
	fs.BoolVar(&o.Version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.LogFormat != "json" && o.LogFormat != "console" {
		return o, fmt.Errorf("--log-format must be json or console, not %q", o.LogFormat)
	}
	if _, err := zapcore.ParseLevel(o.LogLevel); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	if o.Version {
		return o, nil
	}
	if o.Socket == "" {
		o.Socket = getenv("BPFD_SOCKET")
	}
	if o.Socket == "" {
		p, err := DefaultSocket(os.Geteuid(), getenv)
		if err != nil {
			return o, err
		}
		o.Socket = p
	}
	return o, nil
}

// NewLogger returns a zap logger writing to w at level in format ("json"
// or "console").
func NewLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	var enc zapcore.Encoder
	if format == "json" {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec := zap.NewDevelopmentEncoderConfig()
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

// ErrRunning: another daemon answers on the socket path.
var ErrRunning = errors.New("another bpfd is already serving this socket")

// Listen creates the listening socket at path: it makes the parent
// directory (0755), refuses with ErrRunning if a daemon answers there,
// removes a stale socket file no one answers on, refuses to remove anything
// that is not a socket, and sets the socket's mode to 0666 (connecting
// grants nothing by itself).
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; not removing it", path)
		}
		c, err := net.DialTimeout("unixpacket", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrRunning)
		}
		if !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("probing existing socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Main is Run with an explicit context (cancel it to shut down), environment
// and output streams.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := ParseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "bpfd: %v\n", err)
		if errors.Is(err, ErrNoRuntimeDir) {
			return ExitError
		}
		return ExitUsage
	}
	if o.Version {
		fmt.Fprintf(stdout, "bpfd %s\n", version.Version)
		return ExitOK
	}
	log, err := NewLogger(o.LogLevel, o.LogFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bpfd: %v\n", err)
		return ExitUsage
	}
	defer log.Sync()

	srv, err := demux.NewServer(&demux.Config{Logger: log, Version: version.Version})
	if err != nil {
		log.Error("cannot start server", zap.Error(err))
		return ExitError
	}
	ln, err := Listen(o.Socket)
	if err != nil {
		log.Error("cannot listen", zap.String("socket", o.Socket), zap.Error(err))
		srv.Shutdown(context.Background())
		return ExitError
	}
	log.Info("bpfd serving", zap.String("socket", o.Socket), zap.String("version", version.Version),
		zap.Int("pid", os.Getpid()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	code := ExitOK
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		log.Error("serving failed", zap.Error(err))
		code = ExitError
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; connections closed forcibly", zap.Error(err))
	}
	if code == ExitOK {
		<-served
	}
	if err := os.Remove(o.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("cannot remove socket", zap.Error(err))
	}
	log.Info("bpfd stopped")
	return code
}
