// Package daemon is bpfd's main program: flags, environment, logging, the
// listening socket and signal handling around a demux.Server. cmd/bpfd is a
// thin wrapper so that all of this is testable.
//
// Flags (each also settable by environment and config file):
//
//	--socket PATH       socket path (env BPFD_SOCKET; default /run/bpfd/bpfd.sock
//	                    as root, $XDG_RUNTIME_DIR/bpfd/bpfd.sock otherwise)
//	--pin-root DIR      pin root (env BPFD_PIN_ROOT; default /run/bpfd/pins as
//	                    root, $XDG_RUNTIME_DIR/bpfd/pins otherwise)
//	--state-dir DIR     pinned objects across restarts (env BPFD_STATE_DIR;
//	                    default /var/lib/bpfd as root, $XDG_STATE_HOME/bpfd or
//	                    ~/.local/state/bpfd otherwise)
//	--log-level LEVEL   debug, info, warn, error (default info)
//	--log-format FMT    json or console (default console)
//	--max-memory SIZE   cap on the memory held for all clients (default:
//	                    half of the machine's or the cgroup's memory)
//	--memory-quota SIZE per-uid cap on the memory held for it (default 320MiB;
//	                    root 4.5GiB)
//	--map-memory-quota SIZE per-uid cap on map and program storage (default
//	                    256MiB; root 4GiB)
//	--bulk-slots N      verifications and test runs at once (default: CPUs−1)
//	--bulk-nice N       nice value of threads running them (default 10; 0: off)
//	--config FILE       key = value file (env BPFD_CONFIG)
//	--version           print the version and exit
//
// A flag beats the environment, which beats the config file, which beats
// the default. docs/daemon.md is the operator's guide.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/defaults"
	"github.com/bpfd-project/bpfd/internal/version"
	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/sched"
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
	Socket    string // socket path (unused when socket-activated)
	PinRoot   string // pin root directory
	StateDir  string // where pinned objects are saved across restarts
	LogLevel  string
	LogFormat string
	Config    string // the config file read, if any
	Version   bool
	// RuntimeDir holds map storage and the registry's journal (tmpfs);
	// default: "runtime" next to the pin root.
	RuntimeDir string
	// FlushInterval is how often pinned objects are saved to StateDir
	// (0: only when pinned and at shutdown).
	FlushInterval time.Duration
	// FDStore is the unit's FileDescriptorStoreMax (0: do not use
	// systemd's fd store; default $FDSTORE, which systemd ≥ 254 sets).
	FDStore int

	flushRaw, fdStoreRaw string // as given, parsed into the fields above
	// Metrics is where the Prometheus endpoint listens ("unix:PATH" or a
	// loopback host:port); empty: no endpoint.
	Metrics string
	// Resource limits (docs/security.md); empty or zero means the
	// default. Sizes are bytes with an optional K, M, G or T suffix
	// (binary: 1K = 1024), as ParseSize reads them.
	MaxMemory      string // demux.Config.MaxMemory
	MemoryQuota    string // demux.Config.DefaultQuota.Memory (uids other than root)
	MapMemoryQuota string // demux.Config.DefaultQuota.MapMemory
	BulkSlots      string // demux.Config.Sched.Slots
	BulkNice       string // demux.Config.Sched.Nice; "" means sched.DefaultNice
}

// Limits are the resource limits of Options, parsed.
type Limits struct {
	MaxMemory, MemoryQuota, MapMemoryQuota uint64
	BulkSlots, BulkNice                    int
}

// ParseSize reads a size: a decimal number of bytes with an optional
// suffix K, M, G or T (powers of 1024; "KiB", "MB" and the like are
// accepted as the same). Empty is 0.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(strings.TrimSuffix(u, "B"), "I")
	shift := 0
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift != 0 {
			u = u[:n-1]
		}
	}
	v, err := strconv.ParseUint(strings.TrimSpace(u), 10, 64)
	if err != nil || v > math.MaxUint64>>shift {
		return 0, fmt.Errorf("bad size %q (want bytes, or a number with K, M, G or T)", s)
	}
	return v << shift, nil
}

// Limits parses the resource limits of o.
func (o *Options) Limits() (Limits, error) {
	var l Limits
	var err error
	for _, f := range []struct {
		name string
		s    string
		v    *uint64
	}{{"--max-memory", o.MaxMemory, &l.MaxMemory}, {"--memory-quota", o.MemoryQuota, &l.MemoryQuota},
		{"--map-memory-quota", o.MapMemoryQuota, &l.MapMemoryQuota}} {
		if *f.v, err = ParseSize(f.s); err != nil {
			return l, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if o.BulkSlots != "" {
		n, err := strconv.Atoi(o.BulkSlots)
		if err != nil || n < 0 {
			return l, fmt.Errorf("--bulk-slots: want a number ≥ 0, not %q", o.BulkSlots)
		}
		l.BulkSlots = n
	}
	l.BulkNice = sched.DefaultNice
	if o.BulkNice != "" {
		n, err := strconv.Atoi(o.BulkNice)
		if err != nil || n < 0 || n > 19 {
			return l, fmt.Errorf("--bulk-nice: want a number from 0 to 19, not %q", o.BulkNice)
		}
		l.BulkNice = n
	}
	return l, nil
}

// ErrNoRuntimeDir: not root, no --socket or BPFD_SOCKET, XDG_RUNTIME_DIR
// unset and no /run/user/UID of one's own, so there is no default socket
// path (defaults.ErrNoRuntimeDir).
var ErrNoRuntimeDir = defaults.ErrNoRuntimeDir

// DefaultSocket returns the default socket path for a process with
// effective uid euid: /run/bpfd/bpfd.sock for root, else
// $XDG_RUNTIME_DIR/bpfd/bpfd.sock (/run/user/UID/bpfd/bpfd.sock when
// XDG_RUNTIME_DIR is unset and that directory is the user's), or
// ErrNoRuntimeDir. bpfctl and the client try the same path first.
func DefaultSocket(euid int, getenv func(string) string) (string, error) {
	return defaults.Socket(euid, getenv)
}

// ParseOptions parses args with the environment from getenv. Each setting
// comes from its flag, else its environment variable (EnvName: BPFD_SOCKET,
// BPFD_PIN_ROOT, BPFD_STATE_DIR, BPFD_LOG_LEVEL, BPFD_LOG_FORMAT), else the
// config file (--config or BPFD_CONFIG; see ParseConfig), else its default
// (DefaultSocket, DefaultPinRoot, DefaultStateDir, info, console). Usage
// errors are written to stderr; a config file that cannot be read or
// parsed gives an error wrapping ErrConfig.
func ParseOptions(args []string, getenv func(string) string, stderr io.Writer) (Options, error) {
	var o Options
	fs, vals := newFlagSet(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["config"] {
		o.Config = getenv("BPFD_CONFIG")
	}
	var file map[string]string
	if o.Config != "" && !o.Version {
		var err error
		if file, err = readConfig(o.Config); err != nil {
			return o, err
		}
	}
	for _, k := range configKeys {
		if set[k] {
			continue
		}
		if v := getenv(EnvName(k)); v != "" {
			*vals[k] = v
		} else if v, ok := file[k]; ok {
			*vals[k] = v
		}
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.LogFormat == "" {
		o.LogFormat = "console"
	}
	if o.LogFormat != "json" && o.LogFormat != "console" {
		return o, fmt.Errorf("--log-format must be json or console, not %q", o.LogFormat)
	}
	if _, err := zapcore.ParseLevel(o.LogLevel); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	if err := o.parseLifetime(getenv); err != nil {
		return o, err
	}
	if _, err := o.Limits(); err != nil {
		return o, err
	}
	if o.Version {
		return o, nil
	}
	euid := os.Geteuid()
	defaults := []struct {
		v   *string
		def func(int, func(string) string) (string, error)
	}{{&o.Socket, DefaultSocket}, {&o.PinRoot, DefaultPinRoot}, {&o.StateDir, DefaultStateDir}}
	for _, d := range defaults {
		if *d.v != "" {
			continue
		}
		p, err := d.def(euid, getenv)
		if err != nil {
			return o, err
		}
		*d.v = p
	}
	if o.RuntimeDir == "" {
		pr, err := filepath.Abs(o.PinRoot)
		if err != nil {
			return o, err
		}
		o.RuntimeDir = DefaultRuntimeDir(pr)
	}
	return o, nil
}

// newFlagSet returns bpfd's flags bound to o, and the string settings by
// config key.
func newFlagSet(o *Options) (*flag.FlagSet, map[string]*string) {
	fs := flag.NewFlagSet("bpfd", flag.ContinueOnError)
	vals := map[string]*string{"socket": &o.Socket, "pin-root": &o.PinRoot, "state-dir": &o.StateDir,
		"log-level": &o.LogLevel, "log-format": &o.LogFormat, "max-memory": &o.MaxMemory,
		"memory-quota": &o.MemoryQuota, "map-memory-quota": &o.MapMemoryQuota, "bulk-slots": &o.BulkSlots,
		"bulk-nice": &o.BulkNice, "metrics": &o.Metrics}
	fs.StringVar(&o.Socket, "socket", "", "socket path (env BPFD_SOCKET; ignored when socket-activated)")
	fs.StringVar(&o.PinRoot, "pin-root", "", "pin root directory (env BPFD_PIN_ROOT)")
	fs.StringVar(&o.StateDir, "state-dir", "", "directory for pinned objects across restarts (env BPFD_STATE_DIR)")
	fs.StringVar(&o.LogLevel, "log-level", "", "log level: debug, info, warn, error (env BPFD_LOG_LEVEL; default info)")
	fs.StringVar(&o.LogFormat, "log-format", "", "log format: json or console (env BPFD_LOG_FORMAT; default console)")
	fs.StringVar(&o.MaxMemory, "max-memory", "", "cap on the memory held for all clients, e.g. 8G (env BPFD_MAX_MEMORY; default half of the machine's or cgroup's memory)")
	fs.StringVar(&o.MemoryQuota, "memory-quota", "", "per-uid cap on the memory held for it (env BPFD_MEMORY_QUOTA; default 320M, root 4.5G)")
	fs.StringVar(&o.MapMemoryQuota, "map-memory-quota", "", "per-uid cap on map and program storage (env BPFD_MAP_MEMORY_QUOTA; default 256M, root 4G)")
	fs.StringVar(&o.BulkSlots, "bulk-slots", "", "verifications and test runs at once (env BPFD_BULK_SLOTS; default CPUs-1, at least 1)")
	fs.StringVar(&o.BulkNice, "bulk-nice", "", "nice value of the threads running them, so that they yield to element operations (env BPFD_BULK_NICE; default 10, 0 off; needs CAP_SYS_NICE or RLIMIT_NICE to give threads their priority back)")
	fs.StringVar(&o.Metrics, "metrics", "", "serve Prometheus metrics at unix:PATH or a loopback host:port, path /metrics (env BPFD_METRICS; default off)")
	fs.StringVar(&o.Config, "config", "", "config file of `key = value` lines (env BPFD_CONFIG)")
	fs.BoolVar(&o.Version, "version", false, "print the version and exit")
	fs.StringVar(&o.RuntimeDir, "runtime-dir", "", "map storage and the registry's journal, on tmpfs (env BPFD_RUNTIME_DIR; default: runtime next to the pin root)")
	vals["runtime-dir"] = &o.RuntimeDir
	fs.StringVar(&o.flushRaw, "flush-interval", "", "how often pinned objects are saved to the state directory, e.g. 30s; 0: only when pinned and at shutdown (env BPFD_FLUSH_INTERVAL; default 1m)")
	vals["flush-interval"] = &o.flushRaw
	fs.StringVar(&o.fdStoreRaw, "fd-store", "", "keep descriptors in systemd's fd store: the unit's FileDescriptorStoreMax, 0 for off (env BPFD_FD_STORE; default $FDSTORE, set by systemd 254 and later)")
	vals["fd-store"] = &o.fdStoreRaw
	return fs, vals
}

// FlagSet returns bpfd's command-line flags (unparsed), for generated
// documentation such as the man page.
func FlagSet() *flag.FlagSet {
	fs, _ := newFlagSet(&Options{})
	return fs
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
//
// Start-up: it restores the pinned objects saved in the state directory,
// takes the listening socket from an upgrade or socket activation
// or binds its own (Listen), serves, and then tells the service manager
// READY=1 (sd_notify, when NOTIFY_SOCKET is set), pinging WATCHDOG=1 at
// half of WATCHDOG_USEC. Shutdown: STOPPING=1, in-flight requests are
// answered, every pinned object is saved, and the socket file is removed
// (unless it came from socket activation).
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := ParseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "bpfd: %v\n", err)
		if errors.Is(err, ErrNoRuntimeDir) || errors.Is(err, ErrNoStateDir) || errors.Is(err, ErrConfig) {
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
	notifier := NewNotifier(getenv)

	pinRoot, err := filepath.Abs(o.PinRoot)
	if err != nil {
		log.Error("bad pin root", zap.String("pin_root", o.PinRoot), zap.Error(err))
		return ExitError
	}
	state, err := OpenStateDir(o.StateDir, pinRoot)
	if err != nil {
		log.Error("cannot open state directory", zap.String("dir", o.StateDir), zap.Error(err))
		fmt.Fprintf(stderr, "bpfd: %v\n", err)
		return ExitError
	}
	defer state.Close()
	lt, err := openLifetime(log, getenv, o.RuntimeDir, o.FDStore)
	if err != nil {
		log.Error("cannot open the runtime directory", zap.String("dir", o.RuntimeDir), zap.Error(err))
		fmt.Fprintf(stderr, "bpfd: %v\n", err)
		return ExitError
	}
	defer lt.close()
	lt.notifier = notifier
	lim, _ := o.Limits() // checked by ParseOptions
	cfg := &demux.Config{Logger: log, Version: version.Version, PinRoot: pinRoot, Persister: state,
		MaxMemory: lim.MaxMemory, DefaultQuota: demux.Quota{Memory: lim.MemoryQuota, MapMemory: lim.MapMemoryQuota},
		Sched:      sched.Config{Slots: lim.BulkSlots, Nice: lim.BulkNice},
		RuntimeDir: lt.rt.Dir(), FDStore: lt.store, Upgrade: lt.upgrade}
	if cfg.MaxMemory == 0 {
		cfg.MaxMemory = demux.DefaultMaxMemory()
	}
	// The Go runtime collects harder as its own memory nears the cap
	// (unless the operator set GOMEMLIMIT).
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(min(cfg.MaxMemory, math.MaxInt64)))
	}
	srv, err := demux.NewServer(cfg)
	if err != nil {
		log.Error("cannot start server", zap.Error(err))
		return ExitError
	}
	lt.srv = srv
	ln, activated, err := lt.listener(o.Socket)
	if err != nil {
		log.Error("cannot listen", zap.String("socket", o.Socket), zap.Error(err))
		srv.Shutdown(context.Background())
		return ExitError
	}
	lt.activated = activated
	upgraded := lt.handed != nil
	if o.Metrics != "" {
		stopMetrics, err := startMetrics(log, srv, o.Metrics)
		if err != nil {
			log.Error("cannot serve metrics", zap.String("metrics", o.Metrics), zap.Error(err))
			ln.Close()
			srv.Shutdown(context.Background())
			return ExitError
		}
		defer stopMetrics()
	}
	lt.restore(srv, state)
	addr := o.Socket
	if activated {
		addr = ln.Addr().String()
	}
	log.Info("bpfd serving", zap.String("socket", addr), zap.Bool("socket_activated", activated),
		zap.Uint64("max_memory", cfg.MaxMemory), zap.Int("bulk_slots", srv.Stats().BulkSlots),
		zap.Int("bulk_nice", srv.BulkNice()),
		zap.String("pin_root", srv.PinRoot()), zap.String("state_dir", state.Dir()),
		zap.String("runtime_dir", lt.rt.Dir()), zap.Bool("upgraded", upgraded), zap.Bool("fd_store", lt.store != nil),
		zap.String("version", version.Version), zap.Int("pid", os.Getpid()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := notifier.Notify("READY=1\nSTATUS=serving on " + addr); err != nil {
		log.Warn("sd_notify failed", zap.Error(err))
	}
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go lt.flush(wctx, srv, o.FlushInterval)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-hup:
				if err := lt.upgrade(); err != nil {
					log.Error("upgrade failed; serving on", zap.Error(err))
				}
			}
		}
	}()
	if iv, err := WatchdogInterval(getenv, os.Getpid()); err == nil && notifier != nil {
		go notifier.watchdog(wctx, iv, func() bool { srv.Stats(); return true },
			func(err error) { log.Warn("watchdog ping failed", zap.Error(err)) })
	}

	code := ExitOK
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		log.Error("serving failed", zap.Error(err))
		code = ExitError
	}
	stopWatchdog()
	if err := notifier.Notify("STOPPING=1"); err != nil {
		log.Warn("sd_notify failed", zap.Error(err))
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; connections closed forcibly", zap.Error(err))
	}
	if code == ExitOK {
		<-served
	}
	if !activated {
		if err := os.Remove(o.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("cannot remove socket", zap.Error(err))
		}
	}
	log.Info("bpfd stopped")
	return code
}
