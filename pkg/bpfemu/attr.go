package bpfemu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// bpf(2) commands (enum bpf_cmd, linux/bpf.h).
const (
	cmdMapCreate               = 0
	cmdMapLookupElem           = 1
	cmdMapUpdateElem           = 2
	cmdMapDeleteElem           = 3
	cmdMapGetNextKey           = 4
	cmdProgLoad                = 5
	cmdObjPin                  = 6
	cmdObjGet                  = 7
	cmdProgAttach              = 8
	cmdProgDetach              = 9
	cmdProgTestRun             = 10
	cmdProgGetNextID           = 11
	cmdMapGetNextID            = 12
	cmdProgGetFDByID           = 13
	cmdMapGetFDByID            = 14
	cmdObjGetInfoByFD          = 15
	cmdProgQuery               = 16
	cmdRawTracepointOpen       = 17
	cmdBTFLoad                 = 18
	cmdBTFGetFDByID            = 19
	cmdTaskFDQuery             = 20
	cmdMapLookupAndDeleteElem  = 21
	cmdMapFreeze               = 22
	cmdBTFGetNextID            = 23
	cmdMapLookupBatch          = 24
	cmdMapLookupAndDeleteBatch = 25
	cmdMapUpdateBatch          = 26
	cmdMapDeleteBatch          = 27
	cmdLinkCreate              = 28
	cmdLinkUpdate              = 29
	cmdLinkGetFDByID           = 30
	cmdLinkGetNextID           = 31
	cmdEnableStats             = 32
	cmdIterCreate              = 33
	cmdLinkDetach              = 34
	cmdProgBindMap             = 35
	cmdTokenCreate             = 36
)

// cmdNames names the commands for logs and the package's tests.
var cmdNames = [...]string{
	"BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
	"BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH",
	"BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID",
	"BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY",
	"BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID", "BPF_TASK_FD_QUERY",
	"BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID",
	"BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH",
	"BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE", "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID",
	"BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_LINK_DETACH",
	"BPF_PROG_BIND_MAP", "BPF_TOKEN_CREATE",
}

func cmdName(cmd uint64) string {
	if cmd < uint64(len(cmdNames)) {
		return cmdNames[cmd]
	}
	return "BPF_CMD(" + itoa(cmd) + ")"
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// attrSize is sizeof(union bpf_attr) in the uapi layout this package
// decodes (BPF_PROG_LOAD's struct, through keyring_id, is the largest). A
// caller may pass a longer attr as long as every byte beyond it is zero
// (E2BIG otherwise), exactly as bpf_check_uarg_tail_zero; a shorter one is
// zero-extended.
const attrSize = 168

// pageSize bounds the attr size a caller may pass, as the kernel's
// "silly large" check (E2BIG beyond PAGE_SIZE).
const pageSize = 4096

// bpfAttr is union bpf_attr as read from the caller, zero-extended. Its
// accessors take the kernel's offsets (x86_64 layout).
type bpfAttr [attrSize]byte

func (a *bpfAttr) u32(off int) uint32 { return binary.LittleEndian.Uint32(a[off:]) }
func (a *bpfAttr) s32(off int) int32  { return int32(binary.LittleEndian.Uint32(a[off:])) }
func (a *bpfAttr) u64(off int) uint64 { return binary.LittleEndian.Uint64(a[off:]) }
func (a *bpfAttr) put32(off int, v uint32) {
	binary.LittleEndian.PutUint32(a[off:], v)
}

// zeroFrom reports whether every byte from off to the end is zero: the
// kernel's CHECK_ATTR, with off the end of the command's last field.
func (a *bpfAttr) zeroFrom(off int) bool {
	for _, c := range a[off:] {
		if c != 0 {
			return false
		}
	}
	return true
}

// Offsets of union bpf_attr's members (linux/bpf.h, x86_64).
const (
	// BPF_MAP_CREATE
	mcMapType           = 0
	mcKeySize           = 4
	mcValueSize         = 8
	mcMaxEntries        = 12
	mcMapFlags          = 16
	mcInnerMapFD        = 20
	mcNumaNode          = 24
	mcMapName           = 28
	mcMapIfindex        = 44
	mcBTFFD             = 48
	mcBTFKeyTypeID      = 52
	mcBTFValueTypeID    = 56
	mcBTFVmlinuxValueID = 60
	mcMapExtra          = 64
	mcValueTypeBTFObjFD = 72
	mcMapTokenFD        = 76
	mcExclProgHash      = 80
	mcExclProgHashSize  = 88
	mcEnd               = 92

	// BPF_MAP_*_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_MAP_FREEZE
	elMapFD = 0
	elKey   = 8
	elValue = 16 // also next_key
	elFlags = 24
	elEnd   = 32

	// BPF_MAP_*_BATCH
	btInBatch   = 0
	btOutBatch  = 8
	btKeys      = 16
	btValues    = 24
	btCount     = 32
	btMapFD     = 36
	btElemFlags = 40
	btFlags     = 48
	btEnd       = 56

	// BPF_PROG_LOAD
	plProgType           = 0
	plInsnCnt            = 4
	plInsns              = 8
	plLicense            = 16
	plLogLevel           = 24
	plLogSize            = 28
	plLogBuf             = 32
	plKernVersion        = 40
	plProgFlags          = 44
	plProgName           = 48
	plProgIfindex        = 64
	plExpectedAttachType = 68
	plProgBTFFD          = 72
	plFuncInfoRecSize    = 76
	plFuncInfo           = 80
	plFuncInfoCnt        = 88
	plLineInfoRecSize    = 92
	plLineInfo           = 96
	plLineInfoCnt        = 104
	plAttachBTFID        = 108
	plAttachProgFD       = 112
	plCoreReloCnt        = 116
	plFDArray            = 120
	plCoreRelos          = 128
	plCoreReloRecSize    = 136
	plLogTrueSize        = 140
	plProgTokenFD        = 144
	plFDArrayCnt         = 148
	plSignature          = 152
	plSignatureSize      = 160
	plKeyringID          = 164
	plEnd                = 168

	// BPF_OBJ_PIN, BPF_OBJ_GET
	obPathname  = 0
	obBPFFD     = 8
	obFileFlags = 12
	obPathFD    = 16
	obEnd       = 20

	// BPF_PROG_ATTACH, BPF_PROG_DETACH
	paTargetFD         = 0
	paAttachBPFFD      = 4
	paAttachType       = 8
	paAttachFlags      = 12
	paReplaceBPFFD     = 16
	paRelativeFD       = 20
	paExpectedRevision = 24
	paEnd              = 32

	// BPF_PROG_TEST_RUN
	trProgFD      = 0
	trRetval      = 4
	trDataSizeIn  = 8
	trDataSizeOut = 12
	trDataIn      = 16
	trDataOut     = 24
	trRepeat      = 32
	trDuration    = 36
	trCtxSizeIn   = 40
	trCtxSizeOut  = 44
	trCtxIn       = 48
	trCtxOut      = 56
	trFlags       = 64
	trCPU         = 68
	trBatchSize   = 72
	trEnd         = 76

	// BPF_*_GET_NEXT_ID, BPF_*_GET_FD_BY_ID
	idStartID   = 0
	idNextID    = 4
	idOpenFlags = 8
	idTokenFD   = 12
	idNextEnd   = 8  // GET_NEXT_ID's last field: next_id
	idFDEnd     = 12 // GET_FD_BY_ID's last field: open_flags

	// BPF_OBJ_GET_INFO_BY_FD
	inBPFFD   = 0
	inInfoLen = 4
	inInfo    = 8
	inEnd     = 16

	// BPF_BTF_LOAD
	blBTF         = 0
	blLogBuf      = 8
	blBTFSize     = 16
	blLogSize     = 20
	blLogLevel    = 24
	blLogTrueSize = 28
	blBTFFlags    = 32
	blTokenFD     = 36
	blEnd         = 40

	// BPF_LINK_CREATE
	lcProgFD     = 0
	lcTargetFD   = 4
	lcAttachType = 8
	lcFlags      = 12
	lcUnion      = 16

	// BPF_LINK_UPDATE
	luLinkFD    = 0
	luNewProgFD = 4
	luFlags     = 8
	luOldProgFD = 12
	luEnd       = 16

	// BPF_LINK_DETACH
	ldLinkFD = 0
	ldEnd    = 4

	// BPF_ENABLE_STATS
	esType = 0
	esEnd  = 4

	// BPF_PROG_BIND_MAP
	pbProgFD = 0
	pbMapFD  = 4
	pbFlags  = 8
	pbEnd    = 12
)

// Flags and limits from linux/bpf.h and the kernel.
const (
	bpfFRdonly           = 1 << 3 // BPF_F_RDONLY (map_flags, file_flags, open_flags)
	bpfFWronly           = 1 << 4 // BPF_F_WRONLY
	bpfFPathFD           = 1 << 14
	bpfFLock             = 4   // BPF_F_LOCK (elem flags)
	bpfObjNameLen        = 16  // BPF_OBJ_NAME_LEN
	bpfTagSize           = 8   // BPF_TAG_SIZE
	bpfLogMask           = 15  // BPF_LOG_LEVEL1|LEVEL2|STATS|FIXED
	bpfLogFixed          = 8   // BPF_LOG_FIXED
	bpfLogMinSize        = 128 // smallest log buffer the kernel accepts with a level
	bpfLogMaxSize        = (1<<32 - 1) >> 2
	bpfPseudoMapFD       = 1 // LD_IMM64 src_reg
	bpfPseudoMapValue    = 2
	bpfPseudoMapIdx      = 5
	bpfPseudoMapIdxValue = 6
	bpfStatsRunTime      = 0 // BPF_STATS_RUN_TIME
	pathMax              = 4096
)

// fileMode returns the access a file_flags/open_flags word asks for (the
// kernel's bpf_get_file_flag): read-write without flags, EINVAL for both.
func fileMode(flags uint32) (read, write bool, e unix.Errno) {
	switch flags & (bpfFRdonly | bpfFWronly) {
	case bpfFRdonly:
		return true, false, 0
	case bpfFWronly:
		return false, true, 0
	case 0:
		return true, true, 0
	}
	return false, false, unix.EINVAL
}
