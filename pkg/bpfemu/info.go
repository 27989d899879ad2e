package bpfemu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Sizes of the info structs this package fills (linux/bpf.h of Linux
// 6.18): struct bpf_map_info through hash_size, struct bpf_prog_info
// through attach_btf_id. A caller passing a longer struct gets E2BIG
// unless the tail is zero, as bpf_check_uarg_tail_zero.
const (
	mapInfoSize  = 104
	progInfoSize = 232
)

// Offsets in struct bpf_map_info.
const (
	miType           = 0
	miID             = 4
	miKeySize        = 8
	miValueSize      = 12
	miMaxEntries     = 16
	miMapFlags       = 20
	miName           = 24
	miBTFID          = 64
	miBTFKeyTypeID   = 68
	miBTFValueTypeID = 72
	miMapExtra       = 80
	miHash           = 88
	miHashSize       = 96
)

// Offsets in struct bpf_prog_info.
const (
	piType                 = 0
	piID                   = 4
	piTag                  = 8
	piJitedProgLen         = 16
	piXlatedProgLen        = 20
	piJitedProgInsns       = 24
	piXlatedProgInsns      = 32
	piLoadTime             = 40
	piCreatedByUID         = 48
	piNrMapIDs             = 52
	piMapIDs               = 56
	piName                 = 64
	piIfindex              = 80
	piGPLCompatible        = 84
	piNrJitedKsyms         = 104
	piNrJitedFuncLens      = 108
	piBTFID                = 128
	piFuncInfoRecSize      = 132
	piNrFuncInfo           = 144
	piNrLineInfo           = 148
	piNrJitedLineInfo      = 168
	piLineInfoRecSize      = 172
	piJitedLineInfoRecSize = 176
	piNrProgTags           = 180
	piProgTags             = 184
	piRunTimeNS            = 192
	piRunCnt               = 200
	piVerifiedInsns        = 216
)

// Record sizes the kernel insists on (set_info_rec_size).
const (
	funcInfoRecSize      = 8  // struct bpf_func_info
	lineInfoRecSize      = 16 // struct bpf_line_info
	jitedLineInfoRecSize = 8
)

// objInfo answers BPF_OBJ_GET_INFO_BY_FD for maps and programs. A closed
// fd is EBADFD there (not EBADF), an fd of another kind EINVAL.
func (c *call) objInfo(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(inEnd) {
		return 0, unix.EINVAL
	}
	o, err := c.resolve(int32(a.u32(inBPFFD)))
	if err == unix.EBADF {
		return 0, unix.EBADFD
	}
	if err != nil {
		return 0, err
	}
	defer c.s.put(o)
	ulen, uinfo := a.u32(inInfoLen), a.u64(inInfo)
	switch o.info.ObjType {
	case wire.ObjMap:
		return c.mapInfo(o, uinfo, ulen)
	case wire.ObjProg:
		return c.progInfo(o, uinfo, ulen)
	case wire.ObjLink:
		return c.linkInfo(o, uinfo, ulen)
	case wire.ObjBTF:
		return c.btfInfo(o, uinfo, ulen)
	}
	return 0, unix.EINVAL
}

// infoLen applies bpf_check_uarg_tail_zero to a caller's info struct of
// ulen bytes against the size known here, and returns how many bytes are
// exchanged.
func (c *call) infoLen(uinfo uint64, ulen uint32, known int) (int, error) {
	if ulen > pageSize {
		return 0, unix.E2BIG
	}
	if int(ulen) > known {
		tail := c.scratch2(int(ulen) - known)
		if err := c.read(uinfo+uint64(known), tail); err != nil {
			return 0, err
		}
		for _, b := range tail {
			if b != 0 {
				return 0, unix.E2BIG
			}
		}
	}
	return min(int(ulen), known), nil
}

func (c *call) mapInfo(o *object, uinfo uint64, ulen uint32) (int64, error) {
	n, err := c.infoLen(uinfo, ulen, mapInfoSize)
	if err != nil {
		return 0, err
	}
	var info [mapInfoSize]byte
	if err := c.read(uinfo, info[:n]); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	if le.Uint64(info[miHash:]) != 0 {
		// A SHA-256 of the map's values (for exclusive maps of signed
		// programs): no bpfd map offers one, as no kernel map without
		// map_get_hash does.
		return 0, unix.EINVAL
	}
	info = [mapInfoSize]byte{}
	le.PutUint32(info[miType:], o.info.Type)
	le.PutUint32(info[miID:], o.info.ID)
	le.PutUint32(info[miKeySize:], o.info.KeySize)
	le.PutUint32(info[miValueSize:], o.info.ValueSize)
	le.PutUint32(info[miMaxEntries:], o.info.MaxEntries)
	// The kernel keeps BPF_F_RDONLY/WRONLY with the fd, not the map.
	le.PutUint32(info[miMapFlags:], o.info.Flags&^(bpfFRdonly|bpfFWronly))
	copy(info[miName:miName+bpfObjNameLen], o.info.Name[:])
	le.PutUint32(info[miBTFID:], o.info.BTFID)
	le.PutUint32(info[miBTFKeyTypeID:], o.info.BTFKeyTypeID)
	le.PutUint32(info[miBTFValueTypeID:], o.info.BTFValueTypeID)
	if err := c.write(uinfo, info[:n]); err != nil {
		return 0, err
	}
	return 0, c.writeAttr32(inInfoLen, uint32(n))
}

func (c *call) progInfo(o *object, uinfo uint64, ulen uint32) (int64, error) {
	n, err := c.infoLen(uinfo, ulen, progInfoSize)
	if err != nil {
		return 0, err
	}
	var info [progInfoSize]byte
	if err := c.read(uinfo, info[:n]); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	u32 := func(off int) uint32 { return le.Uint32(info[off:]) }
	put32 := func(off int, v uint32) { le.PutUint32(info[off:], v) }
	le.PutUint32(info[piType:], o.info.Type)
	put32(piID, o.info.ID)
	copy(info[piTag:piTag+bpfTagSize], o.info.Tag[:])
	// What bpfd's listing says (load time, license, run statistics, map
	// ids), else what this supervisor saw when it loaded the program.
	var meta progMeta
	if v, ok := c.s.progMeta.Load(o.info.ID); ok {
		meta = v.(progMeta)
	}
	rec, haveRec := c.record(wire.ObjProg, o.info.ID)
	if haveRec {
		meta.gpl = rec.GPL
		if t := bootTimeOf(rec.LoadedAt); t != 0 {
			meta.loadTime = t
		}
	}
	le.PutUint64(info[piLoadTime:], meta.loadTime)
	put32(piCreatedByUID, o.info.OwnerUID)
	copy(info[piName:piName+bpfObjNameLen], o.info.Name[:])
	gpl := uint32(0)
	if meta.gpl {
		gpl = 1
	}
	put32(piGPLCompatible, u32(piGPLCompatible)&^1|gpl)

	// set_info_rec_size.
	if (u32(piNrFuncInfo) != 0 || u32(piFuncInfoRecSize) != 0) && u32(piFuncInfoRecSize) != funcInfoRecSize {
		return 0, unix.EINVAL
	}
	if (u32(piNrLineInfo) != 0 || u32(piLineInfoRecSize) != 0) && u32(piLineInfoRecSize) != lineInfoRecSize {
		return 0, unix.EINVAL
	}
	if (u32(piNrJitedLineInfo) != 0 || u32(piJitedLineInfoRecSize) != 0) && u32(piJitedLineInfoRecSize) != jitedLineInfoRecSize {
		return 0, unix.EINVAL
	}
	put32(piFuncInfoRecSize, funcInfoRecSize)
	put32(piLineInfoRecSize, lineInfoRecSize)
	put32(piJitedLineInfoRecSize, jitedLineInfoRecSize)

	// What a dump (read access) tells: the instructions and map ids.
	insns, mapIDs := c.s.progDump(o)
	if haveRec && len(rec.MapIDs) > 0 {
		mapIDs = rec.MapIDs
	}
	ulenMaps := u32(piNrMapIDs)
	put32(piNrMapIDs, uint32(len(mapIDs)))
	if k := min(int(ulenMaps), len(mapIDs)); k > 0 {
		b := make([]byte, 4*k)
		for i, id := range mapIDs[:k] {
			le.PutUint32(b[4*i:], id)
		}
		if err := c.write(le.Uint64(info[piMapIDs:]), b); err != nil {
			return 0, err
		}
	}
	le.PutUint64(info[piRunTimeNS:], rec.RunTimeNs)
	le.PutUint64(info[piRunCnt:], rec.RunCount)
	put32(piVerifiedInsns, 0)

	ulenX := u32(piXlatedProgLen)
	put32(piXlatedProgLen, uint32(len(insns)))
	if k := min(int(ulenX), len(insns)); k > 0 {
		if err := c.write(le.Uint64(info[piXlatedProgInsns:]), insns[:k]); err != nil {
			return 0, err
		}
	}
	// Not JIT-compiled: no machine code, symbols or function lengths.
	put32(piJitedProgLen, 0)
	put32(piNrJitedKsyms, 0)
	put32(piNrJitedFuncLens, 0)
	put32(piBTFID, rec.BTFID)
	put32(piNrFuncInfo, 0)
	put32(piNrLineInfo, 0)
	put32(piNrJitedLineInfo, 0)
	ulenTags := u32(piNrProgTags)
	put32(piNrProgTags, 1)
	if ulenTags > 0 {
		if err := c.write(le.Uint64(info[piProgTags:]), o.info.Tag[:]); err != nil {
			return 0, err
		}
	}
	if err := c.write(uinfo, info[:n]); err != nil {
		return 0, err
	}
	return 0, c.writeAttr32(inInfoLen, uint32(n))
}

// progDump returns a program's instructions as the kernel's xlated dump
// shows them (map references name map ids) and the ids of the maps it
// uses in order of first use; nothing when the handle may not read the
// program. Cached: a program never changes.
func (s *Supervisor) progDump(o *object) (insns []byte, mapIDs []uint32) {
	s.tab.mu.Lock()
	if o.dumped {
		defer s.tab.mu.Unlock()
		return o.xlated, o.mapIDs
	}
	s.tab.mu.Unlock()
	var ab [wire.HandleAttrSize]byte
	r, err := s.conn.do(wire.CmdProgDump, handleAttr(ab[:], o.handle, 0), nil, nil)
	if err != nil {
		return nil, nil
	}
	closeAll(r.FDs)
	if r.Errno != 0 || r.Ret < 0 || int(r.Ret)*8 > len(r.Data) {
		return nil, nil
	}
	insns = append([]byte(nil), r.Data[:r.Ret*8]...)
	for pc := 0; pc+16 <= len(insns); pc += 8 {
		if insns[pc] != 0x18 {
			continue
		}
		if src := insns[pc+1] >> 4; src == bpfPseudoMapFD || src == bpfPseudoMapValue {
			id := binary.LittleEndian.Uint32(insns[pc+4:])
			if !containsU32(mapIDs, id) {
				mapIDs = append(mapIDs, id)
			}
		}
		pc += 8
	}
	s.tab.mu.Lock()
	o.xlated, o.mapIDs, o.dumped = insns, mapIDs, true
	s.tab.mu.Unlock()
	return insns, mapIDs
}

func containsU32(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
