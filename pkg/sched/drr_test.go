package sched

import (
	"testing"
	"time"
)

// drrModel drives the DRR core directly from fuzz input and checks its
// invariants after every step.
type drrModel struct {
	t       *testing.T
	d       drr
	now     time.Time
	waiting map[*Turn]bool
	running []*Turn
	// ahead, for a turn that made its flow new: the flows that were ahead
	// of it on the new list, the only ones that may be granted before it.
	ahead map[*Turn]map[*flow]bool
}

func (m *drrModel) push(uid uint32, fresh bool, t *Turn) {
	if t == nil {
		t = &Turn{}
		t.f = m.d.flow(uid)
	}
	f := t.f
	wasListed := f.list != onNone
	m.d.push(t, fresh, m.now)
	m.waiting[t] = true
	if !wasListed && f.list == onNew {
		a := map[*flow]bool{}
		for _, g := range m.d.lists[onNew].all() {
			if g != f {
				a[g] = true
			}
		}
		m.ahead[t] = a
	}
}

func (m *drrModel) pop() {
	t := m.d.pop()
	if (t == nil) != (len(m.waiting) == 0) {
		m.t.Fatalf("pop returned %v with %d turns waiting", t, len(m.waiting))
	}
	if t == nil {
		return
	}
	if !m.waiting[t] {
		m.t.Fatalf("pop returned a turn that was not waiting")
	}
	delete(m.waiting, t)
	delete(m.ahead, t)
	for o, a := range m.ahead {
		if !a[t.f] && o.f != t.f {
			m.t.Fatalf("a turn of a new flow (uid %d) was passed over by uid %d, which was not ahead of it", o.f.uid, t.f.uid)
		}
	}
	m.running = append(m.running, t)
}

func (m *drrModel) end(i int, used time.Duration, contended, yield bool) {
	if len(m.running) == 0 {
		return
	}
	i %= len(m.running)
	t := m.running[i]
	m.running = append(m.running[:i], m.running[i+1:]...)
	m.d.charge(t.f, used, contended)
	if yield {
		t.f.running--
		m.push(t.f.uid, false, t)
		return
	}
	m.d.release(t.f, m.now)
}

func (m *drrModel) check() {
	nw := 0
	for uid, f := range m.d.flows {
		if f.uid != uid {
			m.t.Fatalf("flow of uid %d filed under %d", f.uid, uid)
		}
		nw += f.waiting.len()
		if f.deficit > m.d.quantum {
			m.t.Fatalf("uid %d banked %v > quantum", uid, f.deficit)
		}
		if f.running < 0 {
			m.t.Fatalf("uid %d running %d", uid, f.running)
		}
		if f.waiting.len() > 0 && f.list == onNone {
			m.t.Fatalf("uid %d has waiting turns but is on no list", uid)
		}
		seen := 0
		for l := onNew; l <= onOld; l++ {
			for _, g := range m.d.lists[l].all() {
				if g == f {
					seen++
					if l != f.list {
						m.t.Fatalf("uid %d on list %d, says %d", uid, l, f.list)
					}
				}
			}
		}
		if (f.list == onNone) != (seen == 0) || seen > 1 {
			m.t.Fatalf("uid %d appears %d times on the lists (list %d)", uid, seen, f.list)
		}
	}
	for l := onNew; l <= onOld; l++ {
		for _, g := range m.d.lists[l].all() {
			if m.d.flows[g.uid] != g {
				m.t.Fatalf("a forgotten flow (uid %d) is still listed", g.uid)
			}
		}
	}
	if nw != m.d.nwait || nw != len(m.waiting) {
		m.t.Fatalf("waiting: flows %d, nwait %d, model %d", nw, m.d.nwait, len(m.waiting))
	}
	for _, t := range m.running {
		if m.d.flows[t.f.uid] != t.f {
			m.t.Fatalf("the flow of a running turn (uid %d) was forgotten", t.f.uid)
		}
	}
}

func runDRR(t *testing.T, ops []byte) {
	const q = time.Millisecond
	m := &drrModel{t: t, d: newDRR(q), now: time.Unix(1000, 0), waiting: map[*Turn]bool{}, ahead: map[*Turn]map[*flow]bool{}}
	for i := 0; i+1 < len(ops); i += 2 {
		op, arg := ops[i], ops[i+1]
		switch op % 5 {
		case 0:
			m.push(uint32(arg%6), true, nil)
		case 1:
			m.pop()
		case 2:
			m.end(int(arg), time.Duration(arg%40)*q/10, arg&1 == 0, false)
		case 3:
			m.end(int(arg), time.Duration(arg%40)*q/10, arg&1 == 0, true)
		case 4:
			m.now = m.now.Add(time.Duration(arg) * 20 * time.Millisecond)
			if arg&1 == 0 {
				m.d.sweep(m.now)
			}
		}
		m.check()
	}
	// Drain: everything waiting is granted, and once all ends nothing is
	// left but debts.
	for len(m.waiting) > 0 {
		m.pop()
		m.check()
	}
	for len(m.running) > 0 {
		m.end(0, q, false, false)
		m.check()
	}
	m.now = m.now.Add(2 * forgiveAfter)
	m.d.sweep(m.now)
	for uid, f := range m.d.flows {
		if f.list == onNone {
			t.Fatalf("uid %d idle and forgiven but kept", uid)
		}
	}
}

// FuzzDRR drives the DRR core with arbitrary pushes, grants, charges,
// yields and clock jumps, checking its invariants (no turn lost or granted
// twice, list membership, nothing banked beyond a quantum, new flows wait
// only for the new flows ahead of them) after every step.
func FuzzDRR(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 0, 2, 1, 0, 1, 0, 3, 5, 1, 0, 2, 3, 2, 4})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 3, 39, 1, 0, 1, 0, 2, 38, 4, 200, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4096 {
			ops = ops[:4096]
		}
		runDRR(t, ops)
	})
}

// TestDRRRandom runs the fuzz body on pseudo-random programs, so the
// invariants are exercised in every `go test`.
func TestDRRRandom(t *testing.T) {
	seed := uint64(1)
	next := func() byte {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return byte(seed)
	}
	for range 300 {
		ops := make([]byte, 400)
		for i := range ops {
			ops[i] = next()
		}
		runDRR(t, ops)
	}
}
