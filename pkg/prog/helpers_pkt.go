package prog

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// Packet and socket helpers (enum bpf_func_id numbers) that socket
// filters and XDP programs get beyond the base set.
const (
	HelperRedirect             = 23  // XDP
	HelperCsumDiff             = 28  // XDP
	HelperGetNumaNodeID        = 42  // all
	HelperXdpAdjustHead        = 44  // XDP
	HelperGetSocketCookie      = 46  // socket filters
	HelperGetSocketUID         = 47  // socket filters
	HelperXdpAdjustMeta        = 54  // XDP
	HelperXdpAdjustTail        = 65  // XDP
	HelperSkbLoadBytesRelative = 68  // socket filters
	HelperFibLookup            = 69  // XDP
	HelperKtimeGetCoarseNs     = 160 // all
	HelperXdpGetBuffLen        = 188 // XDP
	HelperXdpLoadBytes         = 189 // XDP
	HelperXdpStoreBytes        = 190 // XDP
	HelperKtimeGetTaiNs        = 208 // all
)

// typeHelper is one helper only some program types may call: its
// number, kernel name, prototype (the kernel's argument and return
// types, from the bpf_func_proto of net/core/filter.c) and
// implementation. pktHelpers is the one table of them.
type typeHelper struct {
	num   int32
	name  string
	types []Type
	proto verifier.HelperProto
	fn    interp.HelperFunc
}

var (
	skbOnly  = []Type{SocketFilter}
	xdpOnly  = []Type{XDP}
	anyType  = []Type{SocketFilter, XDP, Seccomp}
	pktTypes = []Type{SocketFilter, XDP}
)

var pktHelpers = []typeHelper{
	{HelperSkbLoadBytes, "bpf_skb_load_bytes", skbOnly, verifier.HelperProto{Name: "skb_load_bytes",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize}},
		helperSkbLoadBytes},
	{HelperSkbLoadBytesRelative, "bpf_skb_load_bytes_relative", skbOnly, verifier.HelperProto{Name: "skb_load_bytes_relative",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize, verifier.ArgAnything}},
		helperSkbLoadBytesRelative},
	{HelperGetSocketCookie, "bpf_get_socket_cookie", skbOnly, verifier.HelperProto{Name: "get_socket_cookie",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}}, helperSocketCookie},
	{HelperGetSocketUID, "bpf_get_socket_uid", skbOnly, verifier.HelperProto{Name: "get_socket_uid",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}}, helperSocketUID},
	{HelperRedirect, "bpf_redirect", xdpOnly, verifier.HelperProto{Name: "redirect",
		Args: [5]verifier.ArgType{verifier.ArgAnything, verifier.ArgAnything}}, helperXdpRedirect},
	{HelperCsumDiff, "bpf_csum_diff", xdpOnly, verifier.HelperProto{Name: "csum_diff",
		Args: [5]verifier.ArgType{verifier.ArgPtrToMem, verifier.ArgConstSizeOrZero, verifier.ArgPtrToMem, verifier.ArgConstSizeOrZero, verifier.ArgAnything}},
		helperCsumDiff},
	{HelperXdpAdjustHead, "bpf_xdp_adjust_head", xdpOnly, verifier.HelperProto{Name: "xdp_adjust_head",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}, ChangesPacket: true}, helperXdpAdjustHead},
	{HelperXdpAdjustMeta, "bpf_xdp_adjust_meta", xdpOnly, verifier.HelperProto{Name: "xdp_adjust_meta",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}, ChangesPacket: true}, helperXdpAdjustMeta},
	{HelperXdpAdjustTail, "bpf_xdp_adjust_tail", xdpOnly, verifier.HelperProto{Name: "xdp_adjust_tail",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}, ChangesPacket: true}, helperXdpAdjustTail},
	{HelperXdpGetBuffLen, "bpf_xdp_get_buff_len", xdpOnly, verifier.HelperProto{Name: "xdp_get_buff_len",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}}, helperXdpGetBuffLen},
	{HelperXdpLoadBytes, "bpf_xdp_load_bytes", xdpOnly, verifier.HelperProto{Name: "xdp_load_bytes",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize}},
		helperXdpLoadBytes},
	{HelperXdpStoreBytes, "bpf_xdp_store_bytes", xdpOnly, verifier.HelperProto{Name: "xdp_store_bytes",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToMem, verifier.ArgConstSize}},
		helperXdpStoreBytes},
	{HelperFibLookup, "bpf_fib_lookup", xdpOnly, verifier.HelperProto{Name: "fib_lookup",
		Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgPtrToMemRW, verifier.ArgConstSize, verifier.ArgAnything}},
		helperFibLookup},
	{HelperKtimeGetCoarseNs, "bpf_ktime_get_coarse_ns", anyType, verifier.HelperProto{Name: "ktime_get_coarse_ns"}, helperKtimeCoarse},
	{HelperKtimeGetTaiNs, "bpf_ktime_get_tai_ns", anyType, verifier.HelperProto{Name: "ktime_get_tai_ns"}, helperKtimeTai},
	{HelperGetNumaNodeID, "bpf_get_numa_node_id", anyType, verifier.HelperProto{Name: "get_numa_node_id"}, helperNumaNode},
}

// typeHelperName returns the name of a helper of pktHelpers, or "".
func typeHelperName(n int32) string {
	for i := range pktHelpers {
		if pktHelpers[i].num == n {
			return pktHelpers[i].name
		}
	}
	return ""
}

// addTypeHelpers adds the prototypes of the helpers t may call.
func addTypeHelpers(t Type, protos map[int32]*verifier.HelperProto) {
	for i := range pktHelpers {
		h := &pktHelpers[i]
		for _, ht := range h.types {
			if ht == t {
				p := h.proto
				protos[h.num] = &p
			}
		}
	}
}

// addTypeHelperFuncs adds the implementations of the helpers t may call.
func addTypeHelperFuncs(t Type, fns map[int32]interp.HelperFunc) {
	for i := range pktHelpers {
		h := &pktHelpers[i]
		for _, ht := range h.types {
			if ht == t {
				fns[h.num] = h.fn
			}
		}
	}
}

// BPF_HDR_START_* for bpf_skb_load_bytes_relative.
const (
	hdrStartMAC = 0
	hdrStartNet = 1
)

// helperSkbLoadBytesRelative is bpf_skb_load_bytes_relative(skb, offset,
// to, len, start_header): len bytes from offset past the MAC or network
// header, or to zeroed and -EFAULT.
func helperSkbLoadBytesRelative(vm *interp.VM, _, r2, r3, r4, r5 uint64) (uint64, error) {
	to, err := vm.Mem(r3, int(uint32(r4)), true)
	if err != nil {
		return 0, err
	}
	rc := vm.Context.(*runCtx)
	off := uint64(uint32(r2))
	var start int
	switch uint32(r5) {
	case hdrStartMAC:
		if rc.macOff < 0 {
			clear(to)
			return errRet(unix.EFAULT), nil
		}
		start = rc.macOff
	case hdrStartNet:
		start = rc.netOff
	default:
		clear(to)
		return errRet(unix.EFAULT), nil
	}
	if off > 0xffff || uint64(start)+off+uint64(len(to)) > uint64(len(rc.frame)) {
		clear(to)
		return errRet(unix.EFAULT), nil
	}
	copy(to, rc.frame[uint64(start)+off:])
	return 0, nil
}

// socketCookies numbers the test runs' sockets, as the kernel's
// sock_gen_cookie numbers sockets: never 0, never reused.
var socketCookies atomic.Uint64

// helperSocketCookie is bpf_get_socket_cookie(skb): the cookie of the
// run's socket (one per test run, shared by its repeats).
func helperSocketCookie(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
	rc := vm.Context.(*runCtx)
	if rc.sockCookie == 0 {
		rc.sockCookie = socketCookies.Add(1)
	}
	return rc.sockCookie, nil
}

// helperSocketUID is bpf_get_socket_uid(skb): the uid owning the run's
// socket; a test run's socket belongs to no file, so uid 0 as in the
// kernel.
func helperSocketUID(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
	return uint64(vm.Context.(*runCtx).sockUID), nil
}

// XDP actions.
const (
	xdpAborted  = 0
	xdpRedirect = 4
)

// helperXdpRedirect is bpf_redirect(ifindex, flags) for XDP: XDP_ABORTED
// for non-zero flags, else XDP_REDIRECT (a test run returns the action;
// nothing is sent).
func helperXdpRedirect(_ *interp.VM, _, r2, _, _, _ uint64) (uint64, error) {
	if r2 != 0 {
		return xdpAborted, nil
	}
	return xdpRedirect, nil
}

// helperCsumDiff is bpf_csum_diff(from, from_size, to, to_size, seed):
// the 32-bit one's complement sum of ~from and to (whole 32-bit words,
// at most 512 bytes together) added to seed, as x86-64's csum_partial
// computes it.
func helperCsumDiff(vm *interp.VM, r1, r2, r3, r4, r5 uint64) (uint64, error) {
	fromSize, toSize := uint32(r2), uint32(r4)
	if (fromSize|toSize)&3 != 0 || uint64(fromSize)+uint64(toSize) > 512 {
		return errRet(unix.EINVAL), nil
	}
	var from, to []byte
	var err error
	if fromSize > 0 {
		if from, err = vm.Mem(r1, int(fromSize), false); err != nil {
			return 0, err
		}
	}
	if toSize > 0 {
		if to, err = vm.Mem(r3, int(toSize), false); err != nil {
			return 0, err
		}
	}
	acc := uint64(uint32(r5))
	add := func(v uint64) {
		var c uint64
		acc, c = bits.Add64(acc, v, 0)
		acc += c
	}
	// csum_partial sums 64-bit words of the diff buffer, then a 32-bit
	// tail; the diff buffer is ~from then to, word by word.
	var diff [512]byte
	n := 0
	for i := 0; i+4 <= len(from); i += 4 {
		binary.LittleEndian.PutUint32(diff[n:], ^binary.LittleEndian.Uint32(from[i:]))
		n += 4
	}
	n += copy(diff[n:], to)
	i := 0
	for ; i+8 <= n; i += 8 {
		add(binary.LittleEndian.Uint64(diff[i:]))
	}
	if i < n {
		add(uint64(binary.LittleEndian.Uint32(diff[i:])))
	}
	hi, lo := uint32(acc>>32), uint32(acc)
	s, c := bits.Add32(hi, lo, 0)
	return uint64(s + c), nil
}

// XDP test-run buffer layout, as the 6.18 kernel's on x86-64 with 4 KiB
// pages: the packet starts after XDP_PACKET_HEADROOM in a page-sized
// frame whose last bytes are the skb_shared_info tailroom; the head may
// not move into the struct xdp_frame at the frame's start.
const (
	xdpHeadroom  = 256
	xdpFrameSize = 4096
	xdpTailroom  = 320
	xdpFrameHdr  = 40  // sizeof(struct xdp_frame)
	xdpMaxMeta   = 252 // type_max(skb_shared_info.meta_len), 4-byte multiples
	xdpFragSize  = 4096
)

// xdpBuff is an XDP test run's packet buffer, kept across repeats.
type xdpBuff struct {
	buf             []byte   // the frame: headroom, packet, tailroom
	meta, data, end int      // offsets into buf
	frags           [][]byte // fragments (packets past the linear limit)
	base            uint64   // the program's pointer to buf[0] in this run
	ctx             []byte   // the program's context, shadow fields after it
}

// sync rewrites the context's shadow pointer fields after a helper moved
// the packet's bounds.
func (x *xdpBuff) sync() {
	binary.LittleEndian.PutUint64(x.ctx[xdpSize+0:], x.base+uint64(x.data))
	binary.LittleEndian.PutUint64(x.ctx[xdpSize+8:], x.base+uint64(x.end))
	binary.LittleEndian.PutUint64(x.ctx[xdpSize+16:], x.base+uint64(x.meta))
}

func (x *xdpBuff) fragsLen() int {
	n := 0
	for _, f := range x.frags {
		n += len(f)
	}
	return n
}

// length is xdp_get_buff_len: the linear part and the fragments.
func (x *xdpBuff) length() int { return x.end - x.data + x.fragsLen() }

// out returns data_out: from the metadata to the end, fragments included.
func (x *xdpBuff) out() []byte {
	o := append([]byte(nil), x.buf[x.meta:x.end]...)
	for _, f := range x.frags {
		o = append(o, f...)
	}
	return o
}

// bytesAt calls fn on the pieces of [off, off+n) of the packet (linear
// part, then fragments); the caller checked the range.
func (x *xdpBuff) bytesAt(off, n int, fn func([]byte)) {
	lin := x.buf[x.data:x.end]
	if off < len(lin) {
		k := min(n, len(lin)-off)
		fn(lin[off : off+k])
		off, n = 0, n-k
	} else {
		off -= len(lin)
	}
	for _, f := range x.frags {
		if n == 0 {
			return
		}
		if off >= len(f) {
			off -= len(f)
			continue
		}
		k := min(n, len(f)-off)
		fn(f[off : off+k])
		off, n = 0, n-k
	}
}

func xdpOf(vm *interp.VM) *xdpBuff { return &vm.Context.(*runCtx).xdp }

// helperXdpAdjustHead is bpf_xdp_adjust_head(xdp, offset).
func helperXdpAdjustHead(vm *interp.VM, _, r2, _, _, _ uint64) (uint64, error) {
	x := xdpOf(vm)
	if x.ctx == nil {
		return errRet(unix.EOPNOTSUPP), nil // a live run's fixed buffer
	}
	off := int(int32(r2))
	metalen := x.data - x.meta
	data := x.data + off
	if data < xdpFrameHdr+metalen || data > x.end-ethHdrLen {
		return errRet(unix.EINVAL), nil
	}
	if metalen > 0 {
		copy(x.buf[x.meta+off:], x.buf[x.meta:x.data])
	}
	x.meta += off
	x.data = data
	x.sync()
	return 0, nil
}

// helperXdpAdjustMeta is bpf_xdp_adjust_meta(xdp, offset).
func helperXdpAdjustMeta(vm *interp.VM, _, r2, _, _, _ uint64) (uint64, error) {
	x := xdpOf(vm)
	if x.ctx == nil {
		return errRet(unix.EOPNOTSUPP), nil // a live run's fixed buffer
	}
	meta := x.meta + int(int32(r2))
	if meta < xdpFrameHdr || meta > x.data {
		return errRet(unix.EINVAL), nil
	}
	if l := x.data - meta; l&3 != 0 || l > xdpMaxMeta {
		return errRet(unix.EACCES), nil
	}
	x.meta = meta
	x.sync()
	return 0, nil
}

// helperXdpAdjustTail is bpf_xdp_adjust_tail(xdp, offset): it grows
// (zero-filled) or shrinks the packet's end, in the last fragment when
// there are fragments.
func helperXdpAdjustTail(vm *interp.VM, _, r2, _, _, _ uint64) (uint64, error) {
	x := xdpOf(vm)
	if x.ctx == nil {
		return errRet(unix.EOPNOTSUPP), nil // a live run's fixed buffer
	}
	off := int(int32(r2))
	if len(x.frags) > 0 {
		if off >= 0 {
			last := &x.frags[len(x.frags)-1]
			if off > xdpFragSize-len(*last) {
				return errRet(unix.EINVAL), nil
			}
			n := len(*last)
			*last = (*last)[:n+off]
			clear((*last)[n:])
			return 0, nil
		}
		shrink := -off
		if shrink > x.length()-ethHdrLen {
			return errRet(unix.EINVAL), nil
		}
		for i := len(x.frags) - 1; i >= 0 && shrink > 0; i-- {
			k := min(shrink, len(x.frags[i]))
			x.frags[i] = x.frags[i][:len(x.frags[i])-k]
			shrink -= k
		}
		for len(x.frags) > 0 && len(x.frags[len(x.frags)-1]) == 0 {
			x.frags = x.frags[:len(x.frags)-1]
		}
		if len(x.frags) == 0 {
			x.end -= shrink
			x.sync()
		}
		return 0, nil
	}
	end := x.end + off
	if end > xdpFrameSize-xdpTailroom || end < x.data+ethHdrLen {
		return errRet(unix.EINVAL), nil
	}
	if off > 0 {
		clear(x.buf[x.end:end])
	}
	x.end = end
	x.sync()
	return 0, nil
}

// helperXdpGetBuffLen is bpf_xdp_get_buff_len(xdp).
func helperXdpGetBuffLen(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
	return uint64(xdpOf(vm).length()), nil
}

// xdpRange checks bpf_xdp_pointer's rules for [off, off+n).
func xdpRange(x *xdpBuff, off, n uint32) (uint64, bool) {
	if off > 0xffff || n > 0xffff {
		return errRet(unix.EFAULT), false
	}
	if int(off)+int(n) > x.length() {
		return errRet(unix.EINVAL), false
	}
	return 0, true
}

// helperXdpLoadBytes is bpf_xdp_load_bytes(xdp, offset, buf, len); on
// failure buf is left as it was, as in the kernel.
func helperXdpLoadBytes(vm *interp.VM, _, r2, r3, r4, _ uint64) (uint64, error) {
	to, err := vm.Mem(r3, int(uint32(r4)), true)
	if err != nil {
		return 0, err
	}
	x := xdpOf(vm)
	if ret, ok := xdpRange(x, uint32(r2), uint32(r4)); !ok {
		return ret, nil
	}
	n := 0
	x.bytesAt(int(uint32(r2)), len(to), func(b []byte) { n += copy(to[n:], b) })
	return 0, nil
}

// helperXdpStoreBytes is bpf_xdp_store_bytes(xdp, offset, buf, len).
func helperXdpStoreBytes(vm *interp.VM, _, r2, r3, r4, _ uint64) (uint64, error) {
	from, err := vm.Mem(r3, int(uint32(r4)), false)
	if err != nil {
		return 0, err
	}
	x := xdpOf(vm)
	if ret, ok := xdpRange(x, uint32(r2), uint32(r4)); !ok {
		return ret, nil
	}
	n := 0
	x.bytesAt(int(uint32(r2)), len(from), func(b []byte) { n += copy(b, from[n:]) })
	return 0, nil
}

func clockNs(id int32) uint64 {
	var ts unix.Timespec
	unix.ClockGettime(id, &ts)
	return uint64(ts.Nano())
}

func helperKtimeCoarse(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
	return clockNs(unix.CLOCK_MONOTONIC_COARSE), nil
}

func helperKtimeTai(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
	return clockNs(unix.CLOCK_TAI), nil
}

// helperNumaNode is bpf_get_numa_node_id: bpfd's runs are not bound to a
// NUMA node; it answers node 0.
func helperNumaNode(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
	return 0, nil
}
