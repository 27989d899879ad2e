package bpfctl

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Return values decoded by name, as the kernel's uapi defines them.
var xdpActions = []string{"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"}

// seccompActions are SECCOMP_RET_* by action (the high 16 bits, with
// KILL_PROCESS's sign bit).
var seccompActions = map[uint32]string{
	0x80000000: "SECCOMP_RET_KILL_PROCESS",
	0x00000000: "SECCOMP_RET_KILL_THREAD",
	0x00030000: "SECCOMP_RET_TRAP",
	0x00050000: "SECCOMP_RET_ERRNO",
	0x7fc00000: "SECCOMP_RET_USER_NOTIF",
	0x7ff00000: "SECCOMP_RET_TRACE",
	0x7ffc0000: "SECCOMP_RET_LOG",
	0x7fff0000: "SECCOMP_RET_ALLOW",
}

// retvalName decodes a program's return value by its type: XDP actions,
// seccomp actions (with the errno of SECCOMP_RET_ERRNO), and for socket
// filters what the kernel does with the packet. "" if nothing applies.
func retvalName(t client.ProgramType, ret uint32) string {
	switch t {
	case client.XDP:
		if int(ret) < len(xdpActions) {
			return xdpActions[ret]
		}
		return "unknown XDP action (the kernel treats it as XDP_ABORTED)"
	case client.Seccomp:
		action := ret & 0xffff0000
		if ret&0x80000000 != 0 {
			action = 0x80000000
		}
		name, ok := seccompActions[action]
		if !ok {
			// The kernel kills the process for unknown actions.
			return fmt.Sprintf("unknown seccomp action %#x (the kernel kills the process)", action)
		}
		data := ret & 0xffff
		switch action {
		case 0x00050000:
			if n := unix.ErrnoName(unix.Errno(data)); n != "" {
				return name + "(" + n + ")"
			}
			return fmt.Sprintf("%s(%d)", name, data)
		case 0x00030000, 0x7ff00000:
			if data != 0 {
				return fmt.Sprintf("%s(%d)", name, data)
			}
		}
		return name
	case client.SocketFilter:
		if ret == 0 {
			return "drop"
		}
		if ret == 1 {
			return "keep 1 byte"
		}
		return fmt.Sprintf("keep %d bytes", ret)
	}
	return ""
}

// runHint explains an EINVAL (or ENOMEM) from a test run of a program of
// type t with the given packet and context: the kernel's input rules.
func runHint(t client.ProgramType, data, ctx []byte, e unix.Errno) string {
	const ethHdr = 14
	switch t {
	case client.SocketFilter, client.XDP:
		if len(data) < ethHdr {
			return fmt.Sprintf("test runs of %s programs need a packet of at least %d bytes (an Ethernet header); got %d: give one with --data FILE or --data-hex", t, ethHdr, len(data))
		}
		if t == client.XDP && e == unix.ENOMEM {
			return "an XDP test-run packet may be at most 73152 bytes"
		}
		if t == client.SocketFilter {
			if len(data) > 3712 {
				return fmt.Sprintf("a socket_filter test-run packet may be at most 3712 bytes; got %d", len(data))
			}
			l3 := len(data) - ethHdr
			switch uint16(data[12])<<8 | uint16(data[13]) {
			case 0x0800:
				if l3 < 20 {
					return fmt.Sprintf("the packet's EtherType is IPv4 but only %d bytes follow the Ethernet header; an IPv4 header takes 20", l3)
				}
			case 0x86dd:
				if l3 < 40 {
					return fmt.Sprintf("the packet's EtherType is IPv6 but only %d bytes follow the Ethernet header; an IPv6 header takes 40", l3)
				}
			}
			if len(ctx) > 192 {
				return fmt.Sprintf("a socket_filter context is a struct __sk_buff of at most 192 bytes; got %d", len(ctx))
			}
			if len(ctx) > 0 {
				return "in a socket_filter context (struct __sk_buff) only mark, priority and cb may be non-zero"
			}
		}
		if t == client.XDP && len(ctx) > 0 {
			return fmt.Sprintf("an XDP context is a struct xdp_md of at most 24 bytes, all zero; got %d bytes", len(ctx))
		}
	case client.Seccomp:
		if len(data) > 0 {
			return "seccomp programs take no packet: drop --data/--data-hex and give the struct seccomp_data with --ctx or --ctx-hex"
		}
		if len(ctx) != 64 {
			return fmt.Sprintf("a seccomp program's context is a struct seccomp_data of 64 bytes (nr u32, arch u32, instruction_pointer u64, args u64[6]); got %d: give it with --ctx FILE or --ctx-hex", len(ctx))
		}
	}
	return ""
}

// writeOut writes b to path ("-": stdout).
func (a *App) writeOut(path string, b []byte) error {
	if path == "-" {
		_, err := a.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fail("run", kFile, false, err)
	}
	return nil
}

func (a *App) progRunCommand() *cobra.Command {
	var dataFile, dataHex, ctxFile, ctxHex, dataOutFile, ctxOutFile string
	var repeat uint32
	var dataOutSize, ctxOutSize int
	cmd := &cobra.Command{
		Use:   "run PIN [--data FILE | --data-hex HEX] [--ctx FILE | --ctx-hex HEX] [--repeat N] [--data-out FILE] [--ctx-out FILE]",
		Short: "Test-run a pinned program (BPF_PROG_TEST_RUN) and print its return value, duration and output",
		Long: `Run the program once (or --repeat N times) on a packet and/or a context, as
BPF_PROG_TEST_RUN does, and print its return value (decoded by name for XDP
and seccomp programs), the mean duration, and the packet and context after
the run. --data-out and --ctx-out write them to files instead ("-":
stdout, raw bytes).

Inputs follow the kernel's rules: socket_filter and xdp programs need a
packet of at least 14 bytes (an Ethernet frame); seccomp programs take no
packet and a 64-byte struct seccomp_data as context.`,
		Example: "  bpfctl prog run filter --data packet.bin --repeat 1000\n" +
			"  bpfctl prog run xdp_prog --data packet.bin --data-out out.bin\n" +
			"  bpfctl prog run policy --ctx-hex '29000000 3e0000c0 0000000000000000 0a00000000000000 ...'",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readInput("data", dataFile, dataHex, cmd.Flags().Changed("data-hex"))
			if err != nil {
				return err
			}
			ctx, err := readInput("ctx", ctxFile, ctxHex, cmd.Flags().Changed("ctx-hex"))
			if err != nil {
				return err
			}
			p, err := a.openProg("run", args[0], true)
			if err != nil {
				return err
			}
			defer p.Close()
			info, err := p.Info()
			if err != nil {
				return fail("run", kRead, false, err)
			}
			opts := &client.RunOptions{Data: data, Repeat: repeat}
			if ctx != nil {
				opts.Context = ctx
			}
			if data != nil || dataOutFile != "" {
				n := dataOutSize
				if n < 0 {
					n = len(data) + 256
				}
				opts.DataOut = make([]byte, n)
			}
			if ctx != nil || ctxOutSize > 0 || ctxOutFile != "" {
				n := ctxOutSize
				if n < 0 {
					n = len(ctx)
					if n == 0 {
						n = 256
					}
				}
				opts.ContextOut = make([]byte, n)
			}
			ret, err := p.Run(opts)
			if err != nil {
				out := fail("run", kRead, false, err)
				var ce *cliError
				if errors.As(out, &ce) && (ce.errno == unix.EINVAL || ce.errno == unix.ENOMEM) {
					if h := runHint(info.Type, data, ctx, ce.errno); h != "" {
						ce.hint = h
					}
				}
				if errors.As(out, &ce) && ce.errno == unix.ENOSPC {
					ce.hint = "the output is larger than the room given; raise --data-size-out or --ctx-size-out"
				}
				return out
			}
			var ctxOut []byte
			if b, ok := opts.ContextOut.([]byte); ok {
				ctxOut = b
			}
			if dataOutFile != "" {
				if err := a.writeOut(dataOutFile, opts.DataOut); err != nil {
					return err
				}
			}
			if ctxOutFile != "" {
				if err := a.writeOut(ctxOutFile, ctxOut); err != nil {
					return err
				}
			}
			name := retvalName(info.Type, ret)
			if a.json {
				v := struct {
					Retval     uint32   `json:"retval"`
					RetvalName string   `json:"retval_name,omitempty"`
					R0         uint64   `json:"r0"`
					DurationNs int64    `json:"duration"`
					Repeat     uint32   `json:"repeat"`
					DataOut    []string `json:"data_out,omitempty"`
					CtxOut     []string `json:"ctx_out,omitempty"`
				}{ret, name, opts.R0, opts.Duration.Nanoseconds(), max(repeat, 1), nil, nil}
				if dataOutFile == "" {
					v.DataOut = jsonBytes(opts.DataOut)
				}
				if ctxOutFile == "" {
					v.CtxOut = jsonBytes(ctxOut)
				}
				a.printJSON(v)
				return nil
			}
			if dataOutFile == "-" || ctxOutFile == "-" {
				return nil // stdout holds the raw bytes
			}
			a.printf("retval: %d (%#x)", ret, ret)
			if name != "" {
				a.printf(" %s", name)
			}
			a.printf("\n")
			a.printf("duration: %s (mean of %d run", opts.Duration.Round(time.Nanosecond), max(repeat, 1))
			if max(repeat, 1) != 1 {
				a.printf("s")
			}
			a.printf(")\n")
			switch {
			case dataOutFile != "":
				a.printf("data out: %d bytes written to %s\n", len(opts.DataOut), dataOutFile)
			case opts.DataOut != nil:
				a.printf("data out: %d bytes\n%s", len(opts.DataOut), hexLines(opts.DataOut))
			}
			switch {
			case ctxOutFile != "":
				a.printf("ctx out: %d bytes written to %s\n", len(ctxOut), ctxOutFile)
			case ctxOut != nil:
				a.printf("ctx out: %d bytes\n%s", len(ctxOut), hexLines(ctxOut))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataFile, "data", "", "file holding the packet to run on")
	fl.StringVar(&dataHex, "data-hex", "", "packet as hex digits")
	fl.StringVar(&ctxFile, "ctx", "", "file holding the context to run on (seccomp: struct seccomp_data)")
	fl.StringVar(&ctxHex, "ctx-hex", "", "context as hex digits")
	fl.StringVar(&dataOutFile, "data-out", "", "write the packet after the run to FILE (- for stdout)")
	fl.StringVar(&ctxOutFile, "ctx-out", "", "write the context after the run to FILE (- for stdout)")
	fl.Uint32Var(&repeat, "repeat", 1, "run this many times; the duration is the mean")
	fl.IntVar(&dataOutSize, "data-size-out", -1, "room for the packet after the run (default: input size + 256)")
	fl.IntVar(&ctxOutSize, "ctx-size-out", -1, "room for the context after the run (default: input size, at least 256)")
	cmd.MarkFlagsMutuallyExclusive("data", "data-hex")
	cmd.MarkFlagsMutuallyExclusive("ctx", "ctx-hex")
	return cmd
}
