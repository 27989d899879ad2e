package verifier

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfd-project/bpfd/pkg/maps"
)

// Context layouts as the program layer will describe them (uapi offsets).
var (
	skbCtx = ContextSpec{Name: "__sk_buff", Size: 192, Fields: []ContextField{
		{Name: "len", Off: 0, Size: 4, Narrow: true},
		{Name: "pkt_type", Off: 4, Size: 4, Narrow: true},
		{Name: "mark", Off: 8, Size: 4, Narrow: true},
		{Name: "queue_mapping", Off: 12, Size: 4, Narrow: true},
		{Name: "protocol", Off: 16, Size: 4, Narrow: true},
		{Name: "vlan_tci", Off: 24, Size: 4, Narrow: true},
		{Name: "vlan_proto", Off: 28, Size: 4, Narrow: true},
		{Name: "priority", Off: 32, Size: 4, Narrow: true},
		{Name: "ingress_ifindex", Off: 36, Size: 4, Narrow: true},
		{Name: "ifindex", Off: 40, Size: 4, Narrow: true},
		{Name: "tc_index", Off: 44, Size: 4, Narrow: true},
		{Name: "cb", Off: 48, Size: 20, Write: true, Narrow: true},
		{Name: "hash", Off: 68, Size: 4, Narrow: true},
		{Name: "sk", Off: 168, Size: 8, Kind: FieldSockCommonOrNull},
	}}
	// sockCommon is struct bpf_sock as a sock_common pointer reads it.
	sockCommon = ContextSpec{Name: "bpf_sock", Size: 80, Fields: []ContextField{
		{Name: "bound_dev_if", Off: 0, Size: 4},
		{Name: "family", Off: 4, Size: 4, Narrow: true, NarrowStarts: 1},
		{Name: "src_ip4", Off: 24, Size: 4, Narrow: true},
		{Name: "src_ip6[0]", Off: 28, Size: 4, Narrow: true},
		{Name: "src_ip6[1]", Off: 32, Size: 4, Narrow: true},
		{Name: "src_ip6[2]", Off: 36, Size: 4, Narrow: true},
		{Name: "src_ip6[3]", Off: 40, Size: 4, Narrow: true},
		{Name: "src_port", Off: 44, Size: 4, Narrow: true, NarrowStarts: 1},
		{Name: "dst_port", Off: 48, Size: 4, Narrow: true, NarrowStarts: 2},
		{Name: "dst_ip4", Off: 52, Size: 4, Narrow: true},
		{Name: "dst_ip6[0]", Off: 56, Size: 4, Narrow: true},
		{Name: "dst_ip6[1]", Off: 60, Size: 4, Narrow: true},
		{Name: "dst_ip6[2]", Off: 64, Size: 4, Narrow: true},
		{Name: "dst_ip6[3]", Off: 68, Size: 4, Narrow: true},
		{Name: "state", Off: 72, Size: 4, Narrow: true, NarrowStarts: 1},
		{Name: "rx_queue_mapping", Off: 76, Size: 4, Narrow: true, NarrowStarts: 1},
	}}
	// skbPktCtx adds data/data_end as tc programs see them (not socket filters).
	skbPktCtx = ContextSpec{Name: "__sk_buff", Size: 192, Fields: append(append([]ContextField(nil), skbCtx.Fields...),
		ContextField{Name: "data", Off: 76, Size: 4, Kind: FieldPacketStart},
		ContextField{Name: "data_end", Off: 80, Size: 4, Kind: FieldPacketEnd},
	)}
	xdpCtx = ContextSpec{Name: "xdp_md", Size: 24, Fields: []ContextField{
		{Name: "data", Off: 0, Size: 4, Kind: FieldPacketStart},
		{Name: "data_end", Off: 4, Size: 4, Kind: FieldPacketEnd},
		{Name: "data_meta", Off: 8, Size: 4, Kind: FieldPacketMeta},
		{Name: "ingress_ifindex", Off: 12, Size: 4},
		{Name: "rx_queue_index", Off: 16, Size: 4},
	}}
)

// seccompCtx is struct seccomp_data, read-only.
var seccompCtx = ContextSpec{Name: "seccomp_data", Size: 64, Fields: []ContextField{
	{Name: "nr", Off: 0, Size: 4},
	{Name: "arch", Off: 4, Size: 4},
	{Name: "instruction_pointer", Off: 8, Size: 8, Narrow: true},
	{Name: "args[0]", Off: 16, Size: 8, Narrow: true},
	{Name: "args[1]", Off: 24, Size: 8, Narrow: true},
	{Name: "args[2]", Off: 32, Size: 8, Narrow: true},
	{Name: "args[3]", Off: 40, Size: 8, Narrow: true},
	{Name: "args[4]", Off: 48, Size: 8, Narrow: true},
	{Name: "args[5]", Off: 56, Size: 8, Narrow: true},
}}

func socketEnv(maps ...MapInfo) *Env {
	return &Env{Context: skbCtx, SockCommon: sockCommon, Maps: maps, LegacyPacket: true}
}

func xdpEnv(maps ...MapInfo) *Env {
	return &Env{Context: xdpCtx, Maps: maps, PacketWrite: true}
}

// mapIndex stands for a map in asm.Instruction.AssociateMap: its FD is the
// index into Env.Maps.
type mapIndex int

func (m mapIndex) FD() int { return int(m) }

func marshal(t testing.TB, insns asm.Instructions) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := insns.Marshal(&b, binary.LittleEndian); err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b.Bytes()
}

// specEnv builds the Env and raw instructions of an ELF program, resolving
// map references to indexes into Env.Maps; mode overrides access per map.
func specEnv(t testing.TB, coll *ebpf.CollectionSpec, prog *ebpf.ProgramSpec, mode map[string][2]bool) ([]byte, *Env) {
	t.Helper()
	env := &Env{LineInfo: map[int]LineInfo{}}
	switch {
	case prog.SectionName == "seccomp":
		env.Context = seccompCtx
	case prog.Type == ebpf.XDP:
		env.Context, env.PacketWrite = xdpCtx, true
	default:
		env.Context, env.LegacyPacket = skbCtx, true
	}
	insns := prog.Copy().Instructions
	index := map[string]int{}
	for i := range insns {
		ins := &insns[i]
		if src, ok := ins.Source().(*btf.Line); ok {
			env.LineInfo[i] = LineInfo{File: src.FileName(), Line: int(src.LineNumber()), Text: src.Line()}
		}
		ref := ins.Reference()
		if !ins.IsLoadFromMap() || ref == "" {
			continue
		}
		idx, ok := index[ref]
		if !ok {
			ms, ok := coll.Maps[ref]
			if !ok {
				t.Fatalf("program %s references unknown map %q", prog.Name, ref)
			}
			idx = len(env.Maps)
			index[ref] = idx
			rw := [2]bool{true, true}
			if m, ok := mode[ref]; ok {
				rw = m
			}
			lock, err := maps.SpinLockOf(ms.Value) // as the daemon does at creation
			if err != nil {
				t.Fatalf("map %s: %v", ref, err)
			}
			env.Maps = append(env.Maps, MapInfo{Type: uint32(ms.Type), KeySize: ms.KeySize, ValueSize: ms.ValueSize,
				MaxEntries: ms.MaxEntries, Flags: ms.Flags, Read: rw[0], Write: rw[1], Name: ref, SpinLock: lock})
		}
		if err := ins.AssociateMap(mapIndex(idx)); err != nil {
			t.Fatal(err)
		}
	}
	// LineInfo keys above are asm indexes; convert to raw instruction indexes.
	raw := map[int]LineInfo{}
	iter := insns.Iterate()
	for iter.Next() {
		if li, ok := env.LineInfo[iter.Index]; ok {
			raw[int(iter.Offset)] = li
		}
	}
	env.LineInfo = raw
	return marshal(t, insns), env
}
