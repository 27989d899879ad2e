package bpfctl

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Links: bpfctl prog attach, bpfctl link show|detach.

// progAttachCommand is "prog attach PIN nfqueue N".
func (a *App) progAttachCommand() *cobra.Command {
	var queues, pin, perm string
	var failOpen bool
	var maxLen uint32
	cmd := &cobra.Command{
		Use:   "attach PIN nfqueue N [--queues A-B] [--fail-open] [--max-len N] [--pin PATH]",
		Short: "Attach a pinned XDP or socket-filter program to netfilter queues",
		Long: `Attach the program pinned at PIN (opened with write access: attaching is a
write) to netfilter queue N, or to the queues A-B (--queues, with N = A), in
bpfctl's network namespace. bpfctl binds the queues itself, so it needs
CAP_NET_ADMIN there; send traffic to them with an iptables rule
(-j NFQUEUE --queue-num N, or --queue-balance A:B). From then on the
program decides every queued packet.

With --pin the link is pinned at PATH and bpfctl returns; the link lives
until the pin is removed or 'bpfctl link detach PATH'. Without --pin bpfctl
stays in the foreground and detaches when interrupted (SIGINT, SIGTERM).`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] != "nfqueue" {
				return usagef("unknown attach point %q (nfqueue)", args[1])
			}
			n, err := strconv.ParseUint(args[2], 10, 16)
			if err != nil {
				return usagef("queue %q: a number from 0 to 65535", args[2])
			}
			first, count := uint16(n), uint16(1)
			if queues != "" {
				lo, hi, ok := strings.Cut(queues, "-")
				l, err1 := strconv.ParseUint(lo, 10, 16)
				h, err2 := strconv.ParseUint(hi, 10, 16)
				if !ok || err1 != nil || err2 != nil || h < l || h-l >= 8 {
					return usagef("--queues %q: A-B, at most 8 queues", queues)
				}
				if uint16(l) != first {
					return usagef("--queues %s does not start at queue %d", queues, first)
				}
				count = uint16(h - l + 1)
			}
			fm := os.FileMode(0o600)
			if perm != "" {
				if fm, err = parsePerm("mode", perm); err != nil {
					return err
				}
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			p, err := c.OpenPinnedProgram(args[0], client.ModeWrite)
			if err != nil {
				return fail("attach", kWrite, false, err)
			}
			defer p.Close()
			l, err := p.AttachNFQueue(first, &client.NFQueueOptions{Queues: count, FailOpen: failOpen, MaxLen: maxLen})
			if err != nil {
				return attachFail(err)
			}
			defer l.Close()
			if pin != "" {
				if err := c.Pin(l, pin, fm); err != nil {
					return fail("attach: pin", kCreate, false, err)
				}
			}
			li, err := l.Info()
			if err != nil {
				return fail("attach", kRead, false, err)
			}
			if a.json {
				a.printJSON(li)
			} else {
				a.printf("link %d: %s %s attached to nfqueue %s\n", li.ID, li.ProgType, li.ProgName, queueList(li.Queues))
			}
			if pin != "" {
				return nil
			}
			if !a.json {
				a.printf("detaching when interrupted (SIGINT, SIGTERM)\n")
			}
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			<-sigs
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&queues, "queues", "", "serve queues A-B (at most 8; A = N), as iptables --queue-balance A:B")
	f.BoolVar(&failOpen, "fail-open", false, "NFQA_CFG_F_FAIL_OPEN: accept instead of drop when a queue is full; accept what waits at detach")
	f.Uint32Var(&maxLen, "max-len", 0, "kernel queue length (0: the kernel's default, 1024)")
	f.StringVar(&pin, "pin", "", "pin the link at PATH and return")
	f.StringVar(&perm, "mode", "", "permission bits of the link's pin file (default 0600)")
	return cmd
}

// attachFail explains an attach refusal.
func attachFail(err error) error {
	out := fail("attach", kWrite, false, err)
	var ce *cliError
	if !errors.As(out, &ce) {
		return out
	}
	switch errnoOf(err) {
	case unix.EPERM:
		ce.hint = "binding a netfilter queue needs CAP_NET_ADMIN in this network namespace, and attaching needs write access to the program"
	case unix.EBUSY:
		ce.hint = "another process holds the queue (see /proc/net/netfilter/nfnetlink_queue); detach its link or choose another queue"
	case unix.EINVAL:
		ce.hint = "only XDP and socket-filter programs attach to netfilter queues"
	}
	return ce
}

func queueList(q []int) string {
	if len(q) == 1 {
		return strconv.Itoa(q[0])
	}
	if len(q) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d-%d", q[0], q[len(q)-1])
}

func (a *App) linkCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "link",
		Short: "Show and detach links (programs attached to netfilter queues)",
	}
	cmd.AddCommand(a.linkShowCommand(), a.linkDetachCommand())
	return cmd
}

func (a *App) linkShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show [PIN | pinned PIN | id N]",
		Short: "Show a link, or every link of yours (every link as root), with counters, pins and holders",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseObjRef("link", args)
			if err != nil {
				return err
			}
			if ref.name != "" {
				return usagef("links have no names: name one as PIN, pinned PIN or id N")
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			var list []client.LinkInfo
			if ref.pin != "" {
				l, err := c.OpenPinnedLink(ref.pin, client.ModeRead)
				if err != nil {
					return fail("show", kRead, false, err)
				}
				defer l.Close()
				li, err := l.Info()
				if err != nil {
					return fail("show", kRead, false, err)
				}
				list = append(list, li)
			} else {
				if list, err = c.Links(); err != nil {
					return fail("show", kRead, false, err)
				}
				if ref.id != 0 {
					list = slices.DeleteFunc(list, func(li client.LinkInfo) bool { return li.ID != ref.id })
					if len(list) == 0 {
						return &cliError{code: ExitFailed, msg: fmt.Sprintf("show: no link with id %d (ENOENT)", ref.id), errno: unix.ENOENT,
							hint: "'bpfctl link show' lists those you may see: your uid's and those you hold (root: all)"}
					}
				}
			}
			extra := a.linkRecords(c)
			out := make([]linkShowJSON, len(list))
			for i := range list {
				out[i].LinkInfo = list[i]
				if r, ok := extra[list[i].ID]; ok {
					out[i].Pinned, out[i].Pids, out[i].OtherPids = orEmpty(r.Pinned), orEmpty(r.Pids), r.OtherPids
				} else {
					out[i].Pinned, out[i].Pids = []string{}, []client.PidRecord{}
				}
			}
			if a.json {
				if ref.all {
					a.printJSON(out)
				} else {
					a.printJSON(out[0])
				}
				return nil
			}
			for i := range out {
				a.printLink(&out[i].LinkInfo)
				r := extra[out[i].ID]
				a.printHolders(&r, "")
			}
			return nil
		},
	}
}

func (a *App) printLink(li *client.LinkInfo) {
	state := "fail-closed"
	if li.FailOpen {
		state = "fail-open"
	}
	if li.Detached {
		state += "  detached"
	}
	a.printf("%d: nfqueue  prog %d %s (%s)  queues %s  %s\n", li.ID, li.ProgID, li.ProgName, li.ProgType,
		queueList(li.Queues), state)
	a.printf("\tpackets %d  bytes %d  pass %d  drop %d  aborted %d  tx %d  redirect %d  invalid %d\n",
		li.Packets, li.Bytes, li.Pass, li.Drop, li.Aborted, li.TX, li.Redirect, li.Invalid)
	a.printf("\terrors %d  rewritten %d  kernel: queue_dropped %d  user_dropped %d  waiting %d\n",
		li.Errors, li.Rewritten, li.KernelQueueDropped, li.KernelUserDropped, li.KernelWaiting)
	a.printf("\tdecision mean %v  p99 %v  owner_uid %d\n", time.Duration(li.DecisionMeanNs),
		time.Duration(li.DecisionP99Ns), li.OwnerUID)
}

func (a *App) linkDetachCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "detach PIN",
		Short: "Detach a pinned link (opened with write access); remove the pin file to forget it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial()
			if err != nil {
				return err
			}
			l, err := c.OpenPinnedLink(args[0], client.ModeWrite)
			if err != nil {
				return fail("detach", kWrite, false, err)
			}
			defer l.Close()
			if err := l.Detach(); err != nil {
				out := fail("detach", kWrite, false, err)
				var ce *cliError
				if errors.As(out, &ce) && errnoOf(err) == unix.EBADF {
					ce.hint = "the link is already detached"
				}
				return out
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
}
