package bpfctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Listing: map show, prog show and link show, with no argument (every
// object the caller may see) or one object by pin, "id N", "pinned PIN" or
// "name NAME", in bpftool's layout (text and -j).

// objRef is how a show command names objects.
type objRef struct {
	all  bool
	id   uint32
	name string
	pin  string
}

// parseObjRef parses a show command's arguments: none, PIN, "pinned PIN",
// "id N" or "name NAME".
func parseObjRef(kind string, args []string) (objRef, error) {
	switch {
	case len(args) == 0:
		return objRef{all: true}, nil
	case len(args) == 1 && args[0] != "id" && args[0] != "name" && args[0] != "pinned":
		return objRef{pin: args[0]}, nil
	case len(args) == 2 && args[0] == "pinned":
		return objRef{pin: args[1]}, nil
	case len(args) == 2 && args[0] == "id":
		id, err := strconv.ParseUint(args[1], 0, 32)
		if err != nil || id == 0 {
			return objRef{}, usagef("%s id %q: want a positive number", kind, args[1])
		}
		return objRef{id: uint32(id)}, nil
	case len(args) == 2 && args[0] == "name":
		if len(args[1]) >= 16 {
			return objRef{}, usagef("%s name %q: names are at most 15 bytes", kind, args[1])
		}
		return objRef{name: args[1]}, nil
	}
	return objRef{}, usagef("name the %s as PIN, pinned PIN, id N or name NAME (or nothing, to list every one)", kind)
}

// kindWord is the word for an object kind in messages.
var kindWord = map[string]string{"map": "map", "prog": "program", "link": "link"}

func (a *App) showCommand(kind string) *cobra.Command {
	return &cobra.Command{
		Use:     "show [PIN | pinned PIN | id N | name NAME]",
		Aliases: []string{"info"},
		Short:   fmt.Sprintf("Show every %s you may see, or one, with its pins and the processes holding it", kindWord[kind]),
		Long: fmt.Sprintf(`With no argument, list every %[1]s you may see: those your uid owns and those
you hold (root: every one). With PIN (or "pinned PIN"), "id N" or "name NAME",
show that one (all of that name).

Each %[1]s shows what bpftool's "%[2]s show" does: id, type, name, sizes and
memory, creation time and owner, btf_id, its pins, and the processes holding
descriptors of it (your own processes; root sees all, others are counted).
Programs also show run_cnt and run_time_ns (every run: test runs, seccomp
decisions, links), their map ids and their seccomp attachments with their
decision counters. Opened by pin, the descriptor's access mode is shown too.`, kindWord[kind], kind),
		Example: fmt.Sprintf("  bpfctl %[1]s show\n  bpfctl %[1]s show id 3\n  bpfctl -j %[1]s show name counts", kind),
		Args:    cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseObjRef(kind, args)
			if err != nil {
				return err
			}
			return a.show(kind, ref)
		},
	}
}

// show prints the objects of kind ref names.
func (a *App) show(kind string, ref objRef) error {
	c, err := a.dial()
	if err != nil {
		return err
	}
	f := client.ObjectFilter{Kind: kind, ID: ref.id, Name: ref.name, Holders: true}
	mode := ""
	if ref.pin != "" {
		id, m, err := a.openForShow(kind, ref.pin)
		if err != nil {
			return err
		}
		f.ID, mode = id, m.String()
	}
	recs, err := c.Objects(f)
	if err != nil {
		return fail("show", kRead, false, err)
	}
	// bpfctl's own descriptors are an artifact of asking.
	self := int32(os.Getpid())
	for i := range recs {
		pids := recs[i].Pids[:0]
		for _, p := range recs[i].Pids {
			if p.PID != self {
				pids = append(pids, p)
			}
		}
		recs[i].Pids = pids
	}
	if len(recs) == 0 && !ref.all {
		what := fmt.Sprintf("id %d", ref.id)
		if ref.name != "" {
			what = fmt.Sprintf("name %q", ref.name)
		}
		return &cliError{code: ExitFailed, msg: fmt.Sprintf("show: no %s with %s (ENOENT)", kindWord[kind], what), errno: unix.ENOENT,
			hint: fmt.Sprintf("'bpfctl %s show' lists those you may see: your uid's and those you hold (root: all)", kind)}
	}
	if a.json {
		out := make([]any, len(recs))
		for i := range recs {
			out[i] = recordJSON(&recs[i], mode)
		}
		if ref.all || ref.name != "" {
			a.printJSON(out)
		} else {
			a.printJSON(out[0])
		}
		return nil
	}
	for i := range recs {
		a.printRecord(&recs[i], mode)
	}
	return nil
}

// openForShow opens pin with read access (write for a write-only pin) to
// learn its object's id and the mode the pin grants.
func (a *App) openForShow(kind, pin string) (uint32, client.Mode, error) {
	c, err := a.dial()
	if err != nil {
		return 0, 0, err
	}
	var obj io.Closer
	var id uint32
	var mode client.Mode
	for _, m := range []client.Mode{client.ModeRead, client.ModeWrite} {
		var o any
		o, err = c.OpenPinned(pin, m)
		if err != nil {
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				continue
			}
			break
		}
		switch x := o.(type) {
		case *client.Map:
			if kind != "map" {
				x.Close()
				return 0, 0, wrongKind(fail("show: "+pin, kOpen, false, unix.EINVAL), kindWord[kind])
			}
			info, ierr := x.Info()
			id, mode, obj, err = info.ID, info.Mode, x, ierr
		case *client.Program:
			if kind != "prog" {
				x.Close()
				return 0, 0, wrongKind(fail("show: "+pin, kOpen, false, unix.EINVAL), kindWord[kind])
			}
			info, ierr := x.Info()
			id, mode, obj, err = info.ID, info.Mode, x, ierr
		default:
			if cl, ok := o.(interface{ Close() error }); ok {
				cl.Close()
			}
			return 0, 0, wrongKind(fail("show: "+pin, kOpen, false, unix.EINVAL), kindWord[kind])
		}
		break
	}
	if err != nil {
		return 0, 0, wrongKind(fail("show: "+pin, kOpen, false, err), kindWord[kind])
	}
	// Keep the descriptor until the listing is made: the object lives.
	a.keep = append(a.keep, obj)
	return id, mode, nil
}

// mapRecordJSON is bpftool's "map show" JSON, plus bpfd's fields.
type mapRecordJSON struct {
	ID           uint32             `json:"id"`
	Type         string             `json:"type"`
	Name         string             `json:"name"`
	Flags        uint32             `json:"flags"`
	BytesKey     uint32             `json:"bytes_key"`
	BytesValue   uint32             `json:"bytes_value"`
	MaxEntries   uint32             `json:"max_entries"`
	BytesMemlock uint64             `json:"bytes_memlock"`
	Frozen       int                `json:"frozen"`
	BTFID        uint32             `json:"btf_id,omitempty"`
	SpinLockOff  *uint32            `json:"spin_lock_off,omitempty"`
	OwnerUID     uint32             `json:"owner_uid"`
	CreatedAt    int64              `json:"created_at"`
	Loader       *client.PidRecord  `json:"loader,omitempty"`
	UsedByProgs  []uint32           `json:"used_by_progs,omitempty"`
	Descriptors  int                `json:"descriptors"`
	Pinned       []string           `json:"pinned"`
	Pids         []client.PidRecord `json:"pids"`
	OtherPids    int                `json:"other_pids,omitempty"`
	Mode         string             `json:"mode,omitempty"`
}

// progRecordJSON is bpftool's "prog show" JSON, plus bpfd's fields.
type progRecordJSON struct {
	ID           uint32                 `json:"id"`
	Type         string                 `json:"type"`
	Name         string                 `json:"name"`
	Tag          string                 `json:"tag"`
	GPL          bool                   `json:"gpl_compatible"`
	RunTimeNs    uint64                 `json:"run_time_ns"`
	RunCnt       uint64                 `json:"run_cnt"`
	LoadedAt     int64                  `json:"loaded_at"`
	UID          uint32                 `json:"uid"`
	Loader       *client.PidRecord      `json:"loader,omitempty"`
	BytesXlated  uint32                 `json:"bytes_xlated"`
	Jited        bool                   `json:"jited"`
	BytesMemlock uint64                 `json:"bytes_memlock"`
	Insns        uint32                 `json:"insns"`
	MapIDs       []uint32               `json:"map_ids"`
	BTFID        uint32                 `json:"btf_id,omitempty"`
	Seccomp      []client.SeccompRecord `json:"seccomp,omitempty"`
	Descriptors  int                    `json:"descriptors"`
	Pinned       []string               `json:"pinned"`
	Pids         []client.PidRecord     `json:"pids"`
	OtherPids    int                    `json:"other_pids,omitempty"`
	Mode         string                 `json:"mode,omitempty"`
}

// linkRecordJSON is bpftool's "link show" JSON, reduced to what every
// link has.
type linkRecordJSON struct {
	ID          uint32             `json:"id"`
	Type        string             `json:"type"`
	ProgID      uint32             `json:"prog_id"`
	UID         uint32             `json:"uid"`
	CreatedAt   int64              `json:"created_at"`
	Descriptors int                `json:"descriptors"`
	Pinned      []string           `json:"pinned"`
	Pids        []client.PidRecord `json:"pids"`
	OtherPids   int                `json:"other_pids,omitempty"`
	Mode        string             `json:"mode,omitempty"`
}

func loaderOf(r *client.ObjectRecord) *client.PidRecord {
	if r.LoaderPID == 0 {
		return nil
	}
	return &client.PidRecord{PID: r.LoaderPID, Comm: r.LoaderComm}
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// recordJSON shapes r as bpftool's JSON for its kind.
func recordJSON(r *client.ObjectRecord, mode string) any {
	switch r.Kind {
	case "map":
		frozen := 0
		if r.Frozen {
			frozen = 1
		}
		return mapRecordJSON{ID: r.ID, Type: mapTypeName(client.MapType(r.Type)), Name: r.Name, Flags: r.Flags,
			BytesKey: r.KeySize, BytesValue: r.ValueSize, MaxEntries: r.MaxEntries, BytesMemlock: r.Memlock,
			Frozen: frozen, BTFID: r.BTFID, SpinLockOff: r.SpinLockOff, OwnerUID: r.OwnerUID, CreatedAt: r.LoadedAt, Loader: loaderOf(r),
			UsedByProgs: r.UsedByProgs, Descriptors: r.Descriptors, Pinned: orEmpty(r.Pinned), Pids: orEmpty(r.Pids),
			OtherPids: r.OtherPids, Mode: mode}
	case "prog":
		return progRecordJSON{ID: r.ID, Type: client.ProgramType(r.Type).String(), Name: r.Name, Tag: r.Tag, GPL: r.GPL,
			RunTimeNs: r.RunTimeNs, RunCnt: r.RunCount, LoadedAt: r.LoadedAt, UID: r.OwnerUID, Loader: loaderOf(r),
			BytesXlated: r.Insns * 8, BytesMemlock: r.Memlock, Insns: r.Insns, MapIDs: orEmpty(r.MapIDs), BTFID: r.BTFID,
			Seccomp: r.Seccomp, Descriptors: r.Descriptors, Pinned: orEmpty(r.Pinned), Pids: orEmpty(r.Pids),
			OtherPids: r.OtherPids, Mode: mode}
	}
	return linkRecordJSON{ID: r.ID, Type: r.Kind, ProgID: r.ProgID, UID: r.OwnerUID, CreatedAt: r.LoadedAt,
		Descriptors: r.Descriptors, Pinned: orEmpty(r.Pinned), Pids: orEmpty(r.Pids), OtherPids: r.OtherPids, Mode: mode}
}

// Time formats the shown times; tests make it deterministic.
func (a *App) timeString(unixSec int64) string {
	if a.Time != nil {
		return a.Time(unixSec)
	}
	return time.Unix(unixSec, 0).Format("2006-01-02T15:04:05-0700")
}

func joinIDs(ids []uint32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, ",")
}

// printRecord prints r as bpftool's "show" does.
func (a *App) printRecord(r *client.ObjectRecord, mode string) {
	loader := ""
	if r.LoaderPID != 0 {
		loader = fmt.Sprintf("  loader %s(%d)", r.LoaderComm, r.LoaderPID)
	}
	switch r.Kind {
	case "map":
		a.printf("%d: %s  ", r.ID, mapTypeName(client.MapType(r.Type)))
		if r.Name != "" {
			a.printf("name %s  ", r.Name)
		}
		a.printf("flags %#x", r.Flags)
		if r.Frozen {
			a.printf("  frozen")
		}
		a.printf("\n\tkey %dB  value %dB  max_entries %d  memlock %dB\n", r.KeySize, r.ValueSize, r.MaxEntries, r.Memlock)
		a.printf("\tcreated %s  uid %d%s\n", a.timeString(r.LoadedAt), r.OwnerUID, loader)
		if r.BTFID != 0 {
			a.printf("\tbtf_id %d", r.BTFID)
			if r.SpinLockOff != nil {
				a.printf("  spin_lock_off %d", *r.SpinLockOff)
			}
			a.printf("\n")
		}
		if len(r.UsedByProgs) > 0 {
			a.printf("\tused_by_progs %s\n", joinIDs(r.UsedByProgs))
		}
	case "prog":
		a.printf("%d: %s  name %s  tag %s", r.ID, client.ProgramType(r.Type), r.Name, r.Tag)
		if r.GPL {
			a.printf("  gpl")
		}
		a.printf("  run_time_ns %d  run_cnt %d\n", r.RunTimeNs, r.RunCount)
		a.printf("\tloaded_at %s  uid %d%s\n", a.timeString(r.LoadedAt), r.OwnerUID, loader)
		a.printf("\txlated %dB  insns %d  memlock %dB", r.Insns*8, r.Insns, r.Memlock)
		if len(r.MapIDs) > 0 {
			a.printf("  map_ids %s", joinIDs(r.MapIDs))
		}
		a.printf("\n")
		if r.BTFID != 0 {
			a.printf("\tbtf_id %d\n", r.BTFID)
		}
		for _, s := range r.Seccomp {
			a.printf("\tseccomp %d: %s  routed %d  allowed %d  denied %s  killed %d", s.ID, attacher(s), s.Routed, s.Allowed,
				deniedString(s.Denied), s.Killed)
			if s.Faults > 0 {
				a.printf("  faults %d", s.Faults)
			}
			a.printf("\n")
		}
	default:
		a.printf("%d: %s  prog %d\n", r.ID, r.Kind, r.ProgID)
		a.printf("\tcreated %s  uid %d%s\n", a.timeString(r.LoadedAt), r.OwnerUID, loader)
	}
	a.printHolders(r, mode)
}

// printHolders prints r's pins, holder processes and (opened by pin) the
// descriptor's mode.
func (a *App) printHolders(r *client.ObjectRecord, mode string) {
	for _, p := range r.Pinned {
		a.printf("\tpinned %s\n", p)
	}
	if len(r.Pids) > 0 || r.OtherPids > 0 {
		var ps []string
		for _, p := range r.Pids {
			ps = append(ps, fmt.Sprintf("%s(%d)", p.Comm, p.PID))
		}
		a.printf("\tpids %s", strings.Join(ps, ", "))
		if r.OtherPids > 0 {
			if len(ps) > 0 {
				a.printf(", ")
			}
			a.printf("%d of other users", r.OtherPids)
		}
		a.printf("\n")
	}
	if mode != "" {
		a.printf("\tmode %s (the pin opened)\n", mode)
	}
}

// attacher describes who attached a seccomp program.
func attacher(s client.SeccompRecord) string {
	if s.PID == 0 {
		return fmt.Sprintf("uid %d", s.UID)
	}
	return fmt.Sprintf("%s(%d) uid %d", s.Comm, s.PID, s.UID)
}

// deniedString formats deny counts by errno: "EPERM:3,EACCES:1", or 0.
func deniedString(d map[string]uint64) string {
	if len(d) == 0 {
		return "0"
	}
	names := make([]string, 0, len(d))
	for n := range d {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s:%d", n, d[n])
	}
	return strings.Join(parts, ",")
}

// linkShowJSON is a link's JSON: the link's own record with its pins and
// holders.
type linkShowJSON struct {
	client.LinkInfo
	Pinned    []string           `json:"pinned"`
	Pids      []client.PidRecord `json:"pids"`
	OtherPids int                `json:"other_pids,omitempty"`
}

// linkRecords returns the listing records of the links the caller may
// see, by id, without bpfctl's own descriptors (none on failure).
func (a *App) linkRecords(c *client.Conn) map[uint32]client.ObjectRecord {
	recs, err := c.Objects(client.ObjectFilter{Kind: "link", Holders: true})
	if err != nil {
		return nil
	}
	self := int32(os.Getpid())
	out := map[uint32]client.ObjectRecord{}
	for _, r := range recs {
		r.Pids = slices.DeleteFunc(r.Pids, func(p client.PidRecord) bool { return p.PID == self })
		out[r.ID] = r
	}
	return out
}
