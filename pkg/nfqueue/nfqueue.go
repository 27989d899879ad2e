// Package nfqueue speaks nfnetlink_queue, the kernel's mechanism for
// letting a userspace process decide packets that a netfilter rule sends
// to a queue (iptables' NFQUEUE target: --queue-num N, --queue-balance
// A:B, --queue-bypass). bpfd uses it to run XDP and socket-filter programs
// on live traffic without kernel eBPF.
//
// # Authority: who binds
//
// Binding a queue is a privileged act the kernel checks: every
// nfnetlink message needs CAP_NET_ADMIN over the network namespace of the
// socket, both in the credentials of whoever opened the socket and of
// whoever sends on it. Bind runs in the client (bpfctl, the Go client):
// it opens the NETLINK_NETFILTER socket in the caller's namespace and
// binds the queue with the caller's own capability (ErrPermission, EPERM,
// without it; ErrBusy, EBUSY, when another socket holds the queue). The
// bound socket then travels to the daemon over SCM_RIGHTS, and Open
// configures it there: the kernel checks again, at every configuration
// message, that the socket owns the queue (ErrNotBound, ErrNotOwner
// otherwise). So bpfd adds the program, never the privilege: a daemon
// running as root cannot be made to filter a namespace its client could
// not administer itself. The daemon needs CAP_NET_ADMIN too (the kernel
// checks the sender of verdicts).
//
// # Wire format
//
// msg.go encodes and decodes the messages by hand: they are small, and
// the receive path must not allocate. Split walks the netlink messages of
// a datagram, Classify says what each is, Parse decodes a queued packet
// (NFQA_PACKET_HDR id, hw protocol and hook, mark, in/out/physical
// ifindexes, source hardware address, L2 header for the bridge family,
// VLAN, priority, NFQA_SKB_INFO, NFQA_CAP_LEN and the payload) into a
// Packet whose slices alias the receive buffer. AppendVerdict and
// AppendVerdictBatch build verdicts (NF_ACCEPT/NF_DROP, optionally with a
// replacement payload). Parse is fuzzed (FuzzParse, seed corpus under
// testdata/fuzz). Configuration on the client side goes through
// github.com/mdlayher/netlink (Dial in the target namespace, Execute with
// acknowledgement); the daemon side wraps the received fd with
// github.com/mdlayher/socket.
//
// # Receive path and allocation
//
// Queue.Receive reads up to Config.Batch datagrams with one recvmmsg(2)
// into buffers allocated once at Open; Queue.Send writes any number of
// verdict messages with one write(2). Both go through the runtime network
// poller (mdlayher/socket's SyscallConn) with a read callback built once,
// so the steady state allocates nothing per packet. mdlayher/socket's
// ReadFunc and mdlayher/netlink's Receive allocate per call (a done
// channel and closures; message slices), so they serve configuration
// only, not packets; see BenchmarkReceive.
//
// # Configuration
//
// Open sets copy mode NFQNL_COPY_PACKET with a copy range (bpfd asks for
// what the program can read: XDP programs address at most the first
// bytes of a frame, socket filters the whole packet), NFQA_CFG_F_GSO (GSO
// packets arrive whole instead of being segmented first),
// NFQA_CFG_F_FAIL_OPEN on request (an overfull queue accepts instead of
// dropping), and the queue length. Packets the kernel queued between the
// client's bind and the daemon's configuration arrived without payload;
// Open sends them through the hook again (NF_REPEAT), so they are queued
// once more, whole.
//
// # When the socket closes
//
// Closing the last reference to the socket destroys the queue instance:
// the kernel drops every packet still waiting for a verdict, and packets
// reaching the rule afterwards are dropped unless the rule says
// --queue-bypass (then they are accepted). This is the fail-closed
// default of a bpfd link whose daemon died.
//
// # Statistics
//
// The kernel reports per-queue counters only in
// /proc/net/netfilter/nfnetlink_queue, per network namespace. OpenStats
// opens that file inside the socket's namespace (SIOCGSKNS gives an fd of
// it; entering it needs CAP_SYS_ADMIN) and StatsReader.Read re-reads it.
//
// # Concurrency
//
// Parse and the Append functions are pure. A Queue's Receive, Datagram
// and Send belong to one goroutine (its worker); Wake, Rearm and Close may
// be called from any. StatsReader is safe for concurrent use.
package nfqueue
