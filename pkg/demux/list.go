package demux

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/bpfd-project/bpfd/pkg/pins"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Listing (OBJ_LIST): every object the caller may see, as bpftool's "map
// show", "prog show", "link show" with no argument, or one by id or name.
//
// Visibility: a client sees the objects its uid owns and those it holds a
// handle of on this connection; uid 0 sees every object. Listing shows
// metadata only (type, sizes, names, counters, pins, holders), never
// contents: reading a map still takes a descriptor. Holder processes are
// found by scanning /proc for the descriptors' socket inodes (as bpftool
// does with its pid iterator); a non-root caller is shown the pid and comm
// of its own uid's processes only, and a count of the others.

// visibleLocked reports whether the caller of c may see o. r.mu must be
// held.
func (c *conn) visibleLocked(o *Object) bool {
	if c.uid == 0 || o.owner == c.uid {
		return true
	}
	for _, h := range c.handles {
		if h != nil && h.obj == o && !h.dead.Load() {
			return true
		}
	}
	return false
}

// objList executes CmdObjList.
func (c *conn) objList(a, data []byte) (int64, error) {
	var at wire.ListAttr
	if !at.Parse(a) || len(data) != 0 || at.Flags&^wire.ListFlagHolders != 0 {
		return 0, ErrInvalid
	}
	name := wire.NameString(at.Name)
	recs := c.srv.listObjects(c, at.Kind, at.ID, name, at.Flags&wire.ListFlagHolders != 0)
	b, err := json.Marshal(recs)
	if err != nil {
		return 0, err
	}
	copy(c.alloc(len(b)), b)
	return int64(len(recs)), nil
}

// objKindName is the record kind of an object kind.
func objKindName(k wire.ObjType) string {
	switch k {
	case wire.ObjMap:
		return "map"
	case wire.ObjProg:
		return "prog"
	case wire.ObjLink:
		return "link"
	case wire.ObjBTF:
		return "btf"
	}
	return "kind" + strconv.Itoa(int(k))
}

// listObjects builds the records c may see (c nil: every object, as uid 0).
func (s *Server) listObjects(c *conn, kind wire.ObjType, id uint32, name string, holders bool) []wire.ObjectRecord {
	r := s.reg
	byIno := map[uint64]int{} // descriptor inode → record index
	recs := []wire.ObjectRecord{}
	objs := map[*Object]int{}
	r.mu.Lock()
	for _, o := range r.objects {
		if kind != 0 && o.kind != kind || id != 0 && o.id != id || name != "" && wire.NameString(o.name) != name {
			continue
		}
		if c != nil && !c.visibleLocked(o) {
			continue
		}
		objs[o] = len(recs)
		recs = append(recs, o.recordLocked())
	}
	// Programs using maps, and descriptors.
	for _, o := range r.objects {
		if i, ok := objs[o]; ok && o.kind == wire.ObjProg {
			for _, d := range o.deps {
				recs[i].MapIDs = append(recs[i].MapIDs, d.id)
			}
		}
		if o.kind == wire.ObjProg {
			for _, d := range o.deps {
				if j, ok := objs[d]; ok {
					recs[j].UsedByProgs = append(recs[j].UsedByProgs, o.id)
				}
			}
		}
		if o.kind == wire.ObjLink && len(o.deps) > 0 {
			if i, ok := objs[o]; ok {
				recs[i].ProgID = o.deps[0].id
			}
			if j, ok := objs[o.deps[0]]; ok {
				recs[j].Attachments++
			}
		}
	}
	for _, d := range r.descs {
		if i, ok := objs[d.obj]; ok && d.peer >= 0 {
			recs[i].Descriptors++
			if d.ino != 0 {
				byIno[d.ino] = i
			}
		}
	}
	r.mu.Unlock()

	// Pins.
	if ps := s.pins; ps != nil {
		root := s.PinRoot()
		type pinOf struct {
			i    int
			list []*pins.Pin
		}
		var todo []pinOf
		ps.mu.Lock()
		for o, i := range objs {
			if pd := ps.objs[o]; pd != nil {
				t := pinOf{i: i}
				for _, n := range pd.pins {
					if n.pin != nil {
						t.list = append(t.list, n.pin)
					}
				}
				todo = append(todo, t)
			}
		}
		ps.mu.Unlock()
		for _, t := range todo {
			for _, p := range t.list {
				if rel, _, err := ps.store.Stat(p); err == nil {
					recs[t.i].Pinned = append(recs[t.i].Pinned, filepath.Join(root, rel))
				}
			}
			sort.Strings(recs[t.i].Pinned)
		}
	}
	// Seccomp attachments.
	for _, st := range s.SeccompStats() {
		i, ok := objs[s.objectByID(st.ProgID)]
		if !ok {
			continue
		}
		rec := wire.SeccompRecord{ID: st.ID, UID: st.UID, Attached: st.AttachedAt.Unix(), Routed: st.Routed,
			Allowed: st.Allowed, Denied: st.Denied, Killed: st.Killed, Faults: st.Faults, RunNs: uint64(st.RunTime)}
		if c == nil || c.uid == 0 || c.uid == st.UID {
			rec.PID, rec.Comm = st.PID, st.Comm
		}
		recs[i].Seccomp = append(recs[i].Seccomp, rec)
		recs[i].Attachments++
	}
	if holders && len(byIno) > 0 {
		uid := uint32(0)
		if c != nil {
			uid = c.uid
		}
		scanHolders(byIno, recs, uid)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].ID < recs[j].ID })
	return recs
}

// objectByID returns the live object id, or nil.
func (s *Server) objectByID(id uint32) *Object {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return s.reg.objects[id]
}

// recordLocked describes o without its relations (filled by
// listObjects). r.mu must be held.
func (o *Object) recordLocked() wire.ObjectRecord {
	rec := wire.ObjectRecord{ID: o.id, Kind: objKindName(o.kind), Name: wire.NameString(o.name), OwnerUID: o.owner,
		LoadedAt: o.stats.loadedAt.Unix(), LoaderPID: o.stats.loaderPID, LoaderComm: o.stats.loaderComm, Memlock: o.mem}
	var info wire.ObjInfo
	o.btfInfo(&info)
	rec.BTFID = info.BTFID
	if o.m != nil {
		rec.Type, rec.Flags, rec.KeySize, rec.ValueSize, rec.MaxEntries = o.spec.Type, o.spec.Flags,
			o.spec.KeySize, o.spec.ValueSize, o.spec.MaxEntries
		rec.Frozen = o.m.Frozen()
		if off, ok := o.spec.LockOffset(); ok {
			rec.SpinLockOff = &off
		}
	}
	if o.p != nil {
		tag := progTag(o.p.Insns())
		rec.Type, rec.Tag, rec.Insns = uint32(o.p.Type()), hex.EncodeToString(tag[:]), uint32(len(o.p.Insns())/8)
		rec.GPL = prog.GPLCompatible(o.p.License())
		runs, d := o.Runs()
		rec.RunCount, rec.RunTimeNs = runs, uint64(d)
	}
	return rec
}

// scanHolders finds the processes holding the descriptors in byIno (client
// end inode → record index) by reading /proc/*/fd, and adds them to the
// records: every holder for uid 0, the caller's own processes otherwise
// (the rest counted in OtherPids).
func scanHolders(byIno map[uint64]int, recs []wire.ObjectRecord, uid uint32) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	type seen struct {
		pid int32
		rec int
	}
	done := map[seen]bool{}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + p.Name()
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue
		}
		var owner uint32
		if fi, err := os.Stat(dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owner = st.Uid
			}
		}
		comm := ""
		for _, fd := range fds {
			target, err := os.Readlink(dir + "/fd/" + fd.Name())
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			i, ok := byIno[ino]
			if !ok || done[seen{int32(pid), i}] {
				continue
			}
			done[seen{int32(pid), i}] = true
			if uid != 0 && owner != uid {
				recs[i].OtherPids++
				continue
			}
			if comm == "" {
				comm = procComm(int32(pid))
			}
			recs[i].Pids = append(recs[i].Pids, wire.PidRecord{PID: int32(pid), Comm: comm})
		}
	}
	for i := range recs {
		sort.Slice(recs[i].Pids, func(a, b int) bool { return recs[i].Pids[a].PID < recs[i].Pids[b].PID })
	}
}
