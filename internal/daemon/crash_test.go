package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// The fault-injection test: a real daemon is killed (SIGKILL, what the
// OOM killer and a crash do) at a random moment while several clients
// and a program write every kind of pinned map; after each restart every
// pinned map must hold exactly what the acknowledged writes made of it —
// plus, for each writer, possibly the one write that was in flight.

// crashBudget is how long TestCrashKeepsAcknowledgedWrites kills and
// restarts daemons (BPFD_CRASH_BUDGET overrides, e.g. 2m for a long run).
func crashBudget() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BPFD_CRASH_BUDGET")); err == nil {
		return d
	}
	if testing.Short() {
		return 3 * time.Second
	}
	return 20 * time.Second
}

// kvModel is one key/value map's acknowledged state: for each key its
// value (absent: no entry), and the operations in flight when the daemon
// died (each may or may not have happened).
type kvModel struct {
	name      string
	spec      client.MapSpec
	canDelete bool
	byRegion  bool // BPF_F_WRONLY: verified by reading its region file
	keys      [][]byte
	mu        sync.Mutex
	committed map[string][]byte
	pending   map[string][][]byte // key -> values the in-flight ops would leave (nil: deleted)
}

func (km *kvModel) ack(key, val []byte) {
	km.mu.Lock()
	defer km.mu.Unlock()
	if val == nil {
		delete(km.committed, string(key))
	} else {
		km.committed[string(key)] = append([]byte(nil), val...)
	}
}

func (km *kvModel) inFlight(key, val []byte) {
	km.mu.Lock()
	defer km.mu.Unlock()
	km.pending[string(key)] = append(km.pending[string(key)], append([]byte(nil), val...))
}

// ringModel is the ring buffer's acknowledged state across rounds:
// records are the sequence numbers the "ringer" program wrote (its
// return value when bpf_ringbuf_output succeeded).
type ringModel struct {
	mu       sync.Mutex
	acked    map[uint64]bool // records of acknowledged runs
	consumed map[uint64]bool // records a reader returned (before a crash or after)
	maxAcked uint64
	pending  bool // a run in flight when the daemon died
}

// crashKey returns key i of a map with key size ks (LPM: /32 prefixes).
func crashKey(spec client.MapSpec, i int) []byte {
	if spec.Type == client.LPMTrie {
		return append(binary.NativeEndian.AppendUint32(nil, 32), 10, 1, byte(i>>8), byte(i))
	}
	return binary.NativeEndian.AppendUint32(nil, uint32(i))
}

// TestCrashKeepsAcknowledgedWrites is the fault-injection test (see the
// comment above): hash, per-CPU hash, LRU and LRU per-CPU hash, array,
// per-CPU array, BPF_F_WRONLY hash (read back from its region file),
// frozen array (written by a program), LPM trie, queue, stack,
// bloom filter, program array and ring buffer (records written by a
// program, consumed through shared memory), written by three clients on their own
// connections (updates, deletes, batches, pushes, pops, slot changes) and
// by a program run in test runs, killed at a random moment, many times;
// then a clean stop and a simulated reboot (/run emptied).
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	// Every map type bpfd has is in the test: a new one must be added
	// here (or refused when pinned, with a test saying so).
	covered := map[uint32]bool{}
	for _, typ := range []client.MapType{client.Hash, client.PercpuHash, client.LRUHash, client.LRUPercpuHash,
		client.Array, client.PercpuArray, client.LPMTrie, client.Queue, client.Stack, client.BloomFilter,
		client.ProgArray, client.RingBuf, client.PerfEventArray,
		// Redirect maps: TestCrashRedirectMaps.
		client.Devmap, client.DevmapHash, client.CPUMap, client.XSKMap} {
		covered[uint32(typ)] = true
	}
	// Maps of maps are refused from pinning (their entries are not
	// persisted): checked below.
	covered[uint32(client.ArrayOfMaps)], covered[uint32(client.HashOfMaps)] = true, true
	for _, typ := range maps.Types() {
		if !covered[typ] {
			t.Errorf("map type %s is not in the crash test: add it (it must survive kill -9 when pinned)", maps.TypeName(typ))
		}
	}
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("BPFD_CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (BPFD_CRASH_SEED reproduces)", seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, errb := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}

	// Maps of every type, pinned.
	kvs := []*kvModel{
		{name: "hash", spec: client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4096}, canDelete: true},
		{name: "pcpu_hash", spec: client.MapSpec{Type: client.PercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 4096}, canDelete: true},
		{name: "lru", spec: client.MapSpec{Type: client.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4096}, canDelete: true},
		{name: "lru_pcpu", spec: client.MapSpec{Type: client.LRUPercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 4096}, canDelete: true},
		{name: "array", spec: client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 64}},
		{name: "pcpu_array", spec: client.MapSpec{Type: client.PercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 64}},
		{name: "hash_wo", spec: client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4096, Flags: uint32(unix.BPF_F_WRONLY)},
			canDelete: true, byRegion: true},
		{name: "lpm", spec: client.MapSpec{Type: client.LPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 4096, Flags: uint32(unix.BPF_F_NO_PREALLOC)}, canDelete: true},
	}
	for _, km := range kvs {
		km.spec.Name = km.name
		m, err := c.NewMap(km.spec)
		if err != nil {
			t.Fatalf("%s: %v", km.name, err)
		}
		if err := c.Pin(m, km.name, 0o600); err != nil {
			t.Fatal(err)
		}
		km.committed, km.pending = map[string][]byte{}, map[string][][]byte{}
		n := 48
		if km.spec.Type == client.Array || km.spec.Type == client.PercpuArray {
			n = 64
			zero := make([]byte, m.ValueBufferSize())
			for i := 0; i < n; i++ {
				km.committed[string(crashKey(km.spec, i))] = zero
			}
		}
		for i := 0; i < n; i++ {
			km.keys = append(km.keys, crashKey(km.spec, i))
		}
		m.Close()
	}
	for _, s := range []client.MapSpec{
		{Type: client.Queue, ValueSize: 8, MaxEntries: 100000, Name: "queue"},
		{Type: client.Stack, ValueSize: 8, MaxEntries: 100000, Name: "stack"},
		{Type: client.BloomFilter, ValueSize: 8, MaxEntries: 100000, Name: "bloom"},
		{Type: client.ProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 8, Name: "progs"},
		{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Name: "count"},
		{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Name: "count_frozen"},
		{Type: client.RingBuf, MaxEntries: 1 << 16, Name: "ring"},
		{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Name: "ringseq"},
		{Type: client.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: uint32(client.PossibleCPUs()), Name: "perf"},
	} {
		m, err := c.NewMap(s)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if s.Name == "count_frozen" {
			// Frozen: the syscall side cannot write it, programs can.
			if err := m.Freeze(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Pin(m, s.Name, 0o600); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
	}
	// A program counting its runs in two arrays, one of them frozen
	// (programs may write it; the syscall side only reads).
	count, _ := c.OpenPinnedMap("count", client.ModeReadWrite)
	countRO, _ := c.OpenPinnedMap("count_frozen", client.ModeReadWrite)
	var insns asm.Instructions
	for i, m := range []*client.Map{count, countRO} {
		skip := "skip" + strconv.Itoa(i)
		insns = append(insns,
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, skip),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(skip))
	}
	insns = append(insns, asm.Return())
	for _, name := range []string{"counter", "other"} {
		p, err := c.LoadProgram(client.ProgramSpec{Type: client.SocketFilter, Instructions: insns, License: "GPL", Name: name})
		if err != nil {
			t.Fatalf("program: %v", err)
		}
		if err := c.Pin(p, name, 0o600); err != nil {
			t.Fatal(err)
		}
		p.Close()
	}
	count.Close()
	countRO.Close()
	// A program writing numbered records into the ring buffer: it
	// returns the record's number, or 0 when the ring was full.
	ringm, _ := c.OpenPinnedMap("ring", client.ModeReadWrite)
	seqm, _ := c.OpenPinnedMap("ringseq", client.ModeReadWrite)
	ringer, err := c.LoadProgram(client.ProgramSpec{Type: client.SocketFilter, License: "GPL", Name: "ringer", Instructions: asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, seqm.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R6, 0, asm.R1, asm.DWord),
		asm.StoreMem(asm.R10, -16, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, ringm.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -16),
		asm.Mov.Imm(asm.R3, 8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R0, asm.R10, -16, asm.DWord),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("fail"),
		asm.Return(),
	}})
	if err != nil {
		t.Fatalf("ring program: %v", err)
	}
	if err := c.Pin(ringer, "ringer", 0o600); err != nil {
		t.Fatal(err)
	}
	ringer.Close()
	ringm.Close()
	seqm.Close()
	// A program writing one sample to the perf event array (its result:
	// 0, or the helper's errno when no ring is attached to the slot).
	perfm, _ := c.OpenPinnedMap("perf", client.ModeReadWrite)
	perfer, err := c.LoadProgram(client.ProgramSpec{Type: client.SocketFilter, License: "GPL", Name: "perfer", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R2, 0x5eed),
		asm.StoreMem(asm.R10, -8, asm.R2, asm.DWord),
		asm.LoadMapPtr(asm.R2, perfm.FD()),
		asm.LoadImm(asm.R3, 0xffffffff, asm.DWord), // BPF_F_CURRENT_CPU
		asm.Mov.Reg(asm.R4, asm.R10),
		asm.Add.Imm(asm.R4, -8),
		asm.Mov.Imm(asm.R5, 8),
		asm.FnPerfEventOutput.Call(),
		asm.Return(),
	}})
	if err != nil {
		t.Fatalf("perf program: %v", err)
	}
	if err := c.Pin(perfer, "perfer", 0o600); err != nil {
		t.Fatal(err)
	}
	perfer.Close()
	perfm.Close()
	// Maps of maps, and programs using them, cannot be pinned: their
	// entries would not survive.
	inner, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []client.MapType{client.ArrayOfMaps, client.HashOfMaps} {
		outer, err := c.NewMap(client.MapSpec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 4, InnerMap: inner})
		if err != nil {
			t.Fatalf("%v: %v", typ, err)
		}
		if err := c.Pin(outer, "outer", 0o600); !errors.Is(err, client.ErrNotSupported) {
			t.Fatalf("pinning a %v: %v, want ErrNotSupported", typ, err)
		}
		p, err := c.LoadProgram(client.ProgramSpec{Type: client.SocketFilter, License: "GPL", Instructions: asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, outer.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}})
		if err != nil {
			t.Fatalf("program using a %v: %v", typ, err)
		}
		if err := c.Pin(p, "outer_user", 0o600); !errors.Is(err, client.ErrNotSupported) {
			t.Fatalf("pinning a program using a %v: %v, want ErrNotSupported", typ, err)
		}
		p.Close()
		outer.Close()
	}
	inner.Close()
	c.Close()
	ring := &ringModel{acked: map[uint64]bool{}, consumed: map[uint64]bool{}}

	var queue, stack [][]byte // acknowledged contents, oldest / bottom first
	bloom := map[string]bool{}
	slots := map[uint32]string{} // prog array slot -> program pin
	var runs uint64              // acknowledged program runs
	var nextVal uint64
	deadline := time.Now().Add(crashBudget())
	rounds := 0
	for ; rounds < 3 || time.Now().Before(deadline); rounds++ {
		st := &crashRound{t: t, sock: sock, rng: rand.New(rand.NewSource(rng.Int63())), kvs: kvs, next: &nextVal, ring: ring}
		// The writers run; the daemon dies at a random moment.
		killAt := time.Duration(rng.Intn(250)) * time.Millisecond
		res := st.run(killAt, cmd, &queue, &stack, bloom, slots, &runs)
		cmd.Wait()
		cmd, errb = startDaemon(t, sock, pins, state)
		if err := st.verify(res, state, &queue, &stack, bloom, slots, &runs); err != nil {
			t.Fatalf("round %d (seed %d, killed after %v): %v\ndaemon log:\n%s", rounds, seed, killAt, err, errb.String())
		}
	}
	t.Logf("%d crashes survived: %d program runs, %d queued, %d stacked, %d in the bloom filter, %d ring records", rounds, runs,
		len(queue), len(stack), len(bloom), len(ring.consumed))
	if strings.Contains(errb.String(), "refused") && !strings.Contains(errb.String(), `"refused": 0`) {
		t.Fatalf("a restore refused something:\n%s", errb.String())
	}

	// Last, a reboot: a few records left unread in the ring buffer, a
	// clean stop (every pinned map saved to the state directory), /run
	// emptied (region files and journal gone), a start, and a clean
	// restart (so that the records name the new region files the test
	// reads BPF_F_WRONLY maps from); then every map must hold the model
	// again, but for program arrays, which come back empty after a reboot
	// (their slots named programs of the earlier boot).
	c, err = client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	ringer, err = c.OpenPinnedProgram("ringer", client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		seq, err := ringer.Run(&client.RunOptions{Data: make([]byte, 64)})
		if err != nil || seq == 0 {
			t.Fatalf("ringer before the reboot: %d %v", seq, err)
		}
		ring.acked[uint64(seq)], ring.maxAcked = true, uint64(seq)
	}
	c.Close()
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
	if err := os.RemoveAll(DefaultRuntimeDir(pins)); err != nil {
		t.Fatal(err)
	}
	cmd, errb = startDaemon(t, sock, pins, state)
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
	cmd, errb = startDaemon(t, sock, pins, state)
	clear(slots)
	st := &crashRound{t: t, sock: sock, rng: rng, kvs: kvs, next: &nextVal, ring: ring}
	if err := st.verify(&roundResult{slotPending: map[uint32]string{}}, state, &queue, &stack, bloom, slots, &runs); err != nil {
		t.Fatalf("after a reboot: %v\ndaemon log:\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), `"refused": 0`) || strings.Contains(errb.String(), "ERROR") {
		t.Fatalf("a restart after a clean stop refused or failed something:\n%s", errb.String())
	}
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
}

// crashRound is one round: writers on their own connections, a kill, the
// checks.
type crashRound struct {
	t    *testing.T
	sock string
	rng  *rand.Rand
	kvs  []*kvModel
	next *uint64
	ring *ringModel
}

// roundResult is what the writers of a round left in flight.
type roundResult struct {
	queuePending *[]byte // a push in flight (value) ...
	queuePop     bool    // ... or a pop
	stackPending *[]byte
	stackPop     bool
	bloomPending []byte
	slotPending  map[uint32]string // slot -> program pin ("" = delete)
	runPending   bool
}

const crashWriters = 3

// run starts the writers, kills the daemon after killAt, and returns
// once every writer stopped at its first error.
func (r *crashRound) run(killAt time.Duration, cmd *exec.Cmd, queue, stack *[][]byte, bloom map[string]bool,
	slots map[uint32]string, runs *uint64) *roundResult {
	t := r.t
	res := &roundResult{slotPending: map[uint32]string{}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acks atomic.Int64 // acknowledged operations of every writer
	for w := 0; w < crashWriters; w++ {
		c, err := client.DialWith(r.sock, &client.DialConfig{NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		maps := map[string]*client.Map{}
		for _, km := range r.kvs {
			m, err := c.OpenPinnedMap(km.name, client.ModeWrite|modeReadIf(!km.byRegion))
			if err != nil {
				t.Fatalf("%s: %v", km.name, err)
			}
			maps[km.name] = m
		}
		seed := r.rng.Int63()
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			defer c.Close()
			rng := rand.New(rand.NewSource(seed))
			for {
				km := r.kvs[rng.Intn(len(r.kvs))]
				m := maps[km.name]
				// Writer w owns the keys i with i%crashWriters == w.
				i := w + crashWriters*rng.Intn(len(km.keys)/crashWriters)
				key := km.keys[i]
				mu.Lock()
				*r.next++
				v := *r.next
				mu.Unlock()
				val := bytes.Repeat(binary.LittleEndian.AppendUint64(nil, v), m.ValueBufferSize()/8)
				touched := [][]byte{key}
				var err error
				switch op := rng.Intn(10); {
				case op < 2 && km.canDelete:
					km.inFlight(key, nil)
					err = m.Delete(key)
					if errors.Is(err, client.ErrKeyNotExist) {
						err = nil
					}
					if err == nil {
						km.ack(key, nil)
					}
				case op < 3 && km.canDelete && km.spec.Type == client.Hash:
					// A batch of two of its keys.
					j := w + crashWriters*rng.Intn(len(km.keys)/crashWriters)
					if j == i {
						j = (i + crashWriters) % (len(km.keys) - len(km.keys)%crashWriters)
					}
					val2 := binary.LittleEndian.AppendUint64(nil, v+1<<40)
					km.inFlight(key, val)
					km.inFlight(km.keys[j], val2)
					touched = append(touched, km.keys[j])
					_, err = m.BatchUpdate(append(append([]byte(nil), key...), km.keys[j]...), append(append([]byte(nil), val...), val2...), nil)
					if err == nil {
						km.ack(key, val)
						km.ack(km.keys[j], val2)
					}
				default:
					km.inFlight(key, val)
					err = m.Update(key, val, client.UpdateAny)
					if err == nil {
						km.ack(key, val)
					}
				}
				if err != nil {
					return // the op stays in flight: the daemon died
				}
				km.mu.Lock()
				for _, k := range touched {
					delete(km.pending, string(k))
				}
				km.mu.Unlock()
				acks.Add(1)
			}
		}(w)
	}
	// One more client pushes and pops the queue and the stack, adds to
	// the bloom filter and changes program-array slots; another runs the
	// program.
	oc, err := client.DialWith(r.sock, &client.DialConfig{NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	qm, _ := oc.OpenPinnedMap("queue", client.ModeReadWrite)
	sm, _ := oc.OpenPinnedMap("stack", client.ModeReadWrite)
	bm, _ := oc.OpenPinnedMap("bloom", client.ModeReadWrite)
	pm, _ := oc.OpenPinnedMap("progs", client.ModeReadWrite)
	progs := map[string]*client.Program{}
	for _, n := range []string{"counter", "other"} {
		p, err := oc.OpenPinnedProgram(n, client.ModeRead)
		if err != nil {
			t.Fatal(err)
		}
		progs[n] = p
	}
	ringer, err := oc.OpenPinnedProgram("ringer", client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	// A reader consumes the ring buffer through its shared storage until
	// the daemon is dead and the writers stopped.
	rc, err := client.DialWith(r.sock, &client.DialConfig{NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	ringMap, err := rc.OpenPinnedMap("ring", client.ModeReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := client.NewRingbufReader(ringMap)
	if err != nil {
		t.Fatal(err)
	}
	var readerStop atomic.Bool
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for !readerStop.Load() {
			reader.SetDeadline(time.Now().Add(20 * time.Millisecond))
			rec, err := reader.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				return
			}
			r.ring.mu.Lock()
			r.ring.consumed[binary.NativeEndian.Uint64(rec.RawSample)] = true
			r.ring.mu.Unlock()
		}
	}()
	defer func() {
		readerStop.Store(true)
		<-readerDone
		reader.Close()
		ringMap.Close()
		rc.Close()
	}()
	orng := rand.New(rand.NewSource(r.rng.Int63()))
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer oc.Close()
		for {
			mu.Lock()
			*r.next++
			v := binary.LittleEndian.AppendUint64(nil, *r.next)
			mu.Unlock()
			var err error
			switch orng.Intn(8) {
			case 0, 1:
				if orng.Intn(3) == 0 && len(*queue) > 0 {
					res.queuePop = true
					err = qm.LookupAndDelete(nil, make([]byte, 8))
					if err == nil {
						*queue = (*queue)[1:]
					}
					res.queuePop = err != nil
				} else {
					res.queuePending = &v
					if err = qm.Update(nil, v, client.UpdateAny); err == nil {
						*queue = append(*queue, v)
						res.queuePending = nil
					}
				}
			case 2, 3:
				if orng.Intn(3) == 0 && len(*stack) > 0 {
					res.stackPop = true
					err = sm.LookupAndDelete(nil, make([]byte, 8))
					if err == nil {
						*stack = (*stack)[:len(*stack)-1]
					}
					res.stackPop = err != nil
				} else {
					res.stackPending = &v
					if err = sm.Update(nil, v, client.UpdateAny); err == nil {
						*stack = append(*stack, v)
						res.stackPending = nil
					}
				}
			case 4:
				res.bloomPending = v
				if err = bm.Update(nil, v, client.UpdateAny); err == nil {
					bloom[string(v)] = true
					res.bloomPending = nil
				}
			case 5:
				k := uint32(orng.Intn(8))
				key := binary.NativeEndian.AppendUint32(nil, k)
				if orng.Intn(3) == 0 {
					res.slotPending[k] = ""
					err = pm.Delete(key)
					if errors.Is(err, client.ErrKeyNotExist) {
						err = nil
					}
					if err == nil {
						delete(slots, k)
					}
				} else {
					name := []string{"counter", "other"}[orng.Intn(2)]
					res.slotPending[k] = name
					err = pm.Update(key, binary.NativeEndian.AppendUint32(nil, uint32(progs[name].FD())), client.UpdateAny)
					if err == nil {
						slots[k] = name
					}
				}
				if err == nil {
					delete(res.slotPending, k)
				}
			case 7:
				r.ring.mu.Lock()
				r.ring.pending = true
				r.ring.mu.Unlock()
				var seq uint32
				if seq, err = ringer.Run(&client.RunOptions{Data: make([]byte, 64)}); err == nil {
					r.ring.mu.Lock()
					if seq != 0 {
						r.ring.acked[uint64(seq)] = true
						r.ring.maxAcked = max(r.ring.maxAcked, uint64(seq))
					}
					r.ring.pending = false
					r.ring.mu.Unlock()
				}
			case 6:
				res.runPending = true
				if _, err = progs["counter"].Run(&client.RunOptions{Data: make([]byte, 64)}); err == nil {
					*runs++
					res.runPending = false
				}
			}
			if err != nil {
				return
			}
			acks.Add(1)
		}
	}()
	// The kill comes at a random moment once the writers are under way
	// (on a loaded machine they may take a while to start).
	waitUntil(t, time.Minute, "the writers to start", func() bool { return acks.Load() >= 2*(crashWriters+1) })
	time.Sleep(killAt)
	cmd.Process.Signal(syscall.SIGKILL)
	wg.Wait()
	return res
}

func modeReadIf(b bool) client.Mode {
	if b {
		return client.ModeRead
	}
	return 0
}

// verify compares every pinned map with the model after a restart, then
// makes the model what the daemon holds (resolving what was in flight).
func (r *crashRound) verify(res *roundResult, state string, queue, stack *[][]byte, bloom map[string]bool,
	slots map[uint32]string, runs *uint64) error {
	c, err := client.Dial(r.sock)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, km := range r.kvs {
		var get func(key, val []byte) error
		if km.byRegion {
			v, unmap, err := regionView(state, km.name)
			if err != nil {
				return fmt.Errorf("%s: %v", km.name, err)
			}
			defer unmap()
			get = v.Lookup
		} else {
			m, err := c.OpenPinnedMap(km.name, client.ModeRead)
			if err != nil {
				return fmt.Errorf("%s after the crash: %v", km.name, err)
			}
			defer m.Close()
			get = func(k, v []byte) error { return m.Lookup(k, v) }
		}
		vs := 8
		if km.spec.Type == client.PercpuHash || km.spec.Type == client.LRUPercpuHash || km.spec.Type == client.PercpuArray {
			vs = 8 * client.PossibleCPUs()
		}
		km.mu.Lock()
		for _, key := range km.keys {
			val := make([]byte, vs)
			err := get(key, val)
			var have []byte // nil: absent
			switch {
			case err == nil:
				have = val
			case errors.Is(err, client.ErrKeyNotExist) || errors.Is(err, mapview.ErrNotFound):
			default:
				km.mu.Unlock()
				return fmt.Errorf("%s %x: %v", km.name, key, err)
			}
			want := km.committed[string(key)]
			ok := bytes.Equal(have, want) && (have == nil) == (want == nil)
			for _, p := range km.pending[string(key)] {
				ok = ok || bytes.Equal(have, p) && (have == nil) == (p == nil)
			}
			if !ok {
				km.mu.Unlock()
				return fmt.Errorf("%s key %x holds %x after the crash; acknowledged %x, in flight %x",
					km.name, key, have, want, km.pending[string(key)])
			}
			if have == nil {
				delete(km.committed, string(key))
			} else {
				km.committed[string(key)] = append([]byte(nil), have...)
			}
		}
		km.pending = map[string][][]byte{}
		km.mu.Unlock()
	}
	// Queue and stack: drain, compare, push back.
	for _, q := range []struct {
		name    string
		model   *[][]byte
		pending *[]byte
		pop     bool
		stack   bool
	}{{"queue", queue, res.queuePending, res.queuePop, false}, {"stack", stack, res.stackPending, res.stackPop, true}} {
		m, err := c.OpenPinnedMap(q.name, client.ModeReadWrite)
		if err != nil {
			return err
		}
		var got [][]byte
		for {
			v := make([]byte, 8)
			if err := m.LookupAndDelete(nil, v); errors.Is(err, client.ErrKeyNotExist) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %v", q.name, err)
			}
			got = append(got, v)
		}
		if q.stack {
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
		}
		wants := [][][]byte{*q.model}
		if q.pending != nil {
			wants = append(wants, append(append([][]byte(nil), *q.model...), *q.pending))
		}
		if q.pop && len(*q.model) > 0 {
			if q.stack {
				wants = append(wants, (*q.model)[:len(*q.model)-1])
			} else {
				wants = append(wants, (*q.model)[1:])
			}
		}
		ok := false
		for _, w := range wants {
			ok = ok || equalSeqs(got, w)
		}
		if !ok {
			return fmt.Errorf("%s holds %d elements %x after the crash; acknowledged %d: %x (push in flight %v, pop in flight %v)",
				q.name, len(got), got, len(*q.model), *q.model, q.pending != nil, q.pop)
		}
		for _, v := range got {
			if err := m.Update(nil, v, client.UpdateAny); err != nil {
				return err
			}
		}
		*q.model = got
		m.Close()
	}
	// Bloom filter: every value acknowledged is there.
	bm, err := c.OpenPinnedMap("bloom", client.ModeRead)
	if err != nil {
		return err
	}
	for v := range bloom {
		if err := bm.Lookup(nil, []byte(v)); err != nil {
			return fmt.Errorf("bloom filter lost %x after the crash: %v", v, err)
		}
	}
	bm.Close()
	// Program array: every slot names the program it was given (ids are
	// kept across a restart), or an in-flight change.
	ids := map[string]uint32{}
	for _, n := range []string{"counter", "other"} {
		p, err := c.OpenPinnedProgram(n, client.ModeRead)
		if err != nil {
			return fmt.Errorf("program %s after the crash: %v", n, err)
		}
		info, err := p.Info()
		if err != nil {
			return err
		}
		ids[n] = info.ID
		p.Close()
	}
	pm, err := c.OpenPinnedMap("progs", client.ModeRead)
	if err != nil {
		return err
	}
	for k := uint32(0); k < 8; k++ {
		v := make([]byte, 4)
		err := pm.Lookup(binary.NativeEndian.AppendUint32(nil, k), v)
		have := ""
		if err == nil {
			for n, id := range ids {
				if binary.NativeEndian.Uint32(v) == id {
					have = n
				}
			}
			if have == "" {
				return fmt.Errorf("program array slot %d holds id %d, no program's", k, binary.NativeEndian.Uint32(v))
			}
		} else if !errors.Is(err, client.ErrKeyNotExist) {
			return err
		}
		p, inflight := res.slotPending[k]
		if have != slots[k] && !(inflight && have == p) {
			return fmt.Errorf("program array slot %d holds %q after the crash; acknowledged %q", k, have, slots[k])
		}
		if have == "" {
			delete(slots, k)
		} else {
			slots[k] = have
		}
	}
	pm.Close()
	// Ring buffer: in order, every acknowledged record not consumed
	// before the crash; maybe records consumed after a producer last saw
	// the consumer position (delivered again), and the record of the run
	// in flight. Reading them all consumes them.
	if err := r.verifyRing(c); err != nil {
		return err
	}
	// Perf event array: pinned, it comes back with its program, but its
	// slots empty (a slot's ring belongs to the reader that attached it,
	// which re-attaches); a reader attached now gets the program's sample.
	if err := verifyPerf(c); err != nil {
		return err
	}
	// The program's counters: every acknowledged run, maybe the one in
	// flight.
	for _, name := range []string{"count", "count_frozen"} {
		m, err := c.OpenPinnedMap(name, client.ModeRead)
		if err != nil {
			return err
		}
		v := make([]byte, 8)
		if err := m.Lookup(binary.NativeEndian.AppendUint32(nil, 0), v); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		n := binary.LittleEndian.Uint64(v)
		if n != *runs && !(res.runPending && n == *runs+1) {
			return fmt.Errorf("%s counts %d runs after the crash; %d acknowledged (one in flight: %v)", name, n, *runs, res.runPending)
		}
		if name == "count" {
			*runs = n
		}
		m.Close()
	}
	return nil
}

// verifyRing reads every record the ring buffer holds after a restart
// and checks them against the model (see verify).
func (r *crashRound) verifyRing(c *client.Conn) error {
	m, err := c.OpenPinnedMap("ring", client.ModeReadWrite)
	if err != nil {
		return fmt.Errorf("ring buffer after the crash: %v", err)
	}
	defer m.Close()
	rd, err := client.NewRingbufReader(m)
	if err != nil {
		return err
	}
	defer rd.Close()
	rd.SetDeadline(time.Now()) // records already there are returned
	rm := r.ring
	rm.mu.Lock()
	defer rm.mu.Unlock()
	seen := map[uint64]bool{}
	var last, extra uint64
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return fmt.Errorf("ring buffer after the crash: %v", err)
		}
		if len(rec.RawSample) != 8 {
			return fmt.Errorf("ring buffer record of %d bytes after the crash", len(rec.RawSample))
		}
		v := binary.NativeEndian.Uint64(rec.RawSample)
		if v <= last {
			return fmt.Errorf("ring buffer record %d after %d", v, last)
		}
		last = v
		switch {
		case rm.acked[v] || rm.consumed[v]:
		case rm.pending && v > rm.maxAcked && extra == 0:
			extra = v // the run in flight
		default:
			return fmt.Errorf("ring buffer holds record %d that no acknowledged run wrote (last acknowledged %d, in flight %v)", v, rm.maxAcked, rm.pending)
		}
		seen[v] = true
	}
	for v := range rm.acked {
		if !seen[v] && !rm.consumed[v] {
			return fmt.Errorf("ring buffer lost record %d (acknowledged, never read)", v)
		}
	}
	for v := range seen {
		rm.consumed[v] = true
	}
	rm.acked = map[uint64]bool{}
	rm.pending = false
	return nil
}

// verifyPerf checks the pinned perf event array and its program after a
// restart (see verify).
func verifyPerf(c *client.Conn) error {
	m, err := c.OpenPinnedMap("perf", client.ModeReadWrite)
	if err != nil {
		return fmt.Errorf("perf event array after the crash: %v", err)
	}
	defer m.Close()
	p, err := c.OpenPinnedProgram("perfer", client.ModeRead)
	if err != nil {
		return fmt.Errorf("perf program after the crash: %v", err)
	}
	defer p.Close()
	if ret, err := p.Run(&client.RunOptions{Data: make([]byte, 64)}); err != nil || int32(ret) != -int32(unix.ENOENT) {
		return fmt.Errorf("perf output with no reader after the crash: %d %v, want -ENOENT (slots do not survive)", int32(ret), err)
	}
	rd, err := client.NewPerfReader(m, 4096)
	if err != nil {
		return fmt.Errorf("perf reader after the crash: %v", err)
	}
	defer rd.Close()
	if ret, err := p.Run(&client.RunOptions{Data: make([]byte, 64)}); err != nil || ret != 0 {
		return fmt.Errorf("perf output after the crash: %d %v", int32(ret), err)
	}
	rd.SetDeadline(time.Now().Add(time.Minute))
	rec, err := rd.Read()
	if err != nil || len(rec.RawSample) < 8 || binary.NativeEndian.Uint64(rec.RawSample) != 0x5eed {
		return fmt.Errorf("perf sample after the crash: %+v %v", rec, err)
	}
	return nil
}

func equalSeqs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// regionView maps, read-only, the region file of the pinned map named
// name (found through its record in the state directory) and returns a
// reader of it: how the test reads a BPF_F_WRONLY map, from storage.
func regionView(state, name string) (*mapview.View, func(), error) {
	ents, err := filepath.Glob(filepath.Join(state, "pinned-*.state"))
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		po, err := DecodeState(b)
		if err != nil || po.Spec.Name != name || po.Region == "" {
			continue
		}
		f, err := os.Open(filepath.Join(DefaultRuntimeDir(filepath.Join(filepath.Dir(state), "pins")), po.Region))
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, nil, err
		}
		mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, nil, err
		}
		v, err := mapview.New(mem)
		if err != nil {
			unix.Munmap(mem)
			return nil, nil, err
		}
		return v, func() { unix.Munmap(mem) }, nil
	}
	return nil, nil, fmt.Errorf("no record of %s names its region", name)
}
