package sched

import "time"

// flow is one uid's state in the DRR core. Every field is guarded by the
// Scheduler's mutex (the core itself does no locking).
type flow struct {
	uid uint32
	// deficit is the CPU time the flow may still use in the current round:
	// a grant reserves one quantum, charge trues it up with the time really
	// used. Negative after an overrun (a run that could not be cut at the
	// slice end): the flow is then passed over until the rounds it sits out
	// have paid the debt back.
	deficit time.Duration
	waiting turnQueue // turns waiting for a slot, FIFO
	running int       // turns holding a slot
	list    listID    // which list the flow is on
	// idleSince is when the flow last had nothing waiting and nothing
	// running; a debt older than forgiveAfter is forgiven.
	idleSince time.Time

	grants uint64 // slots granted (first grants and resumptions), for tests
}

// listID names the list a flow is on.
type listID uint8

const (
	onNone listID = iota
	onNew         // new flows: served before old ones (sparse flows wait least)
	onOld
)

// forgiveAfter is how long a flow must have been idle for its debt to be
// forgiven: debt only orders flows that compete, and a flow that stopped
// competing a while ago starts afresh.
const forgiveAfter = time.Second

// drr is a deficit round robin over flows, after FQ-CoDel's variant
// (RFC 8290, section 4): a flow that becomes active joins the new-flows
// list, served before the old-flows list, so a uid that only now asks for
// the CPU is served at the next free slot, however many uids flood; a flow
// that used its quantum moves to the tail of the old flows; a new flow that
// runs out of waiting turns moves to the old flows too (so leaving and
// coming back cannot be used to stay "new"), and an old flow with nothing
// waiting leaves the lists.
//
// Costs are not known when a turn is granted: a grant reserves one quantum
// of the flow's deficit, and charge replaces the reservation with the time
// the turn really used.
type drr struct {
	quantum time.Duration
	flows   map[uint32]*flow
	lists   [3]flowQueue // indexed by listID; [onNone] unused
	nwait   int          // turns waiting, all flows
}

func newDRR(quantum time.Duration) drr {
	return drr{quantum: quantum, flows: map[uint32]*flow{}}
}

// flow returns uid's flow, creating it idle.
func (d *drr) flow(uid uint32) *flow {
	f := d.flows[uid]
	if f == nil {
		f = &flow{uid: uid}
		d.flows[uid] = f
	}
	return f
}

// push queues t (whose flow is t.f) at the tail of its flow's turns and
// activates the flow if it was not on a list. Only fresh work (not a turn
// cut at a slice boundary) may make a flow new.
func (d *drr) push(t *Turn, fresh bool, now time.Time) {
	f := t.f
	f.waiting.push(t)
	d.nwait++
	if f.list != onNone {
		return
	}
	if f.running == 0 && f.deficit < 0 && now.Sub(f.idleSince) >= forgiveAfter {
		f.deficit = 0
	}
	if !fresh || f.deficit < 0 || f.running > 0 {
		// A turn cut at its slice end, a flow in debt or one still
		// running: no new-flow privilege.
		d.moveTo(f, onOld)
		return
	}
	f.deficit = d.quantum
	d.moveTo(f, onNew)
}

func (d *drr) moveTo(f *flow, l listID) {
	f.list = l
	d.lists[l].push(f)
}

// pop returns the next turn to grant a slot to, with one quantum reserved
// from its flow's deficit, or nil if no turn waits.
func (d *drr) pop() *Turn {
	if d.nwait == 0 {
		return nil
	}
	for {
		l := onNew
		if d.lists[onNew].len() == 0 {
			l = onOld
		}
		q := &d.lists[l]
		f := q.head()
		if f == nil {
			// Unreachable while nwait > 0: every flow with a waiting
			// turn is on a list.
			return nil
		}
		if f.deficit <= 0 {
			// Its round is over: a fresh quantum, to the tail of the
			// old flows. A flow deep in debt needs several rounds;
			// skip them at once when every listed flow is in debt.
			q.pop()
			f.deficit += d.quantum
			d.moveTo(f, onOld)
			if l == onOld {
				d.payRounds()
			}
			continue
		}
		if f.waiting.len() == 0 {
			q.pop()
			if l == onNew {
				d.moveTo(f, onOld)
			} else {
				f.list = onNone
				d.maybeIdle(f)
			}
			continue
		}
		t := f.waiting.pop()
		d.nwait--
		f.deficit -= d.quantum
		f.running++
		f.grants++
		return t
	}
}

// payRounds adds, when no flow on the old list may run (every one with a
// waiting turn is in debt), as many whole quanta to each as the least
// indebted needs to become eligible: the rounds in which nobody could run
// are skipped in one step instead of one quantum at a time.
func (d *drr) payRounds() {
	if d.lists[onNew].len() > 0 {
		return
	}
	var need time.Duration = -1
	for _, f := range d.lists[onOld].all() {
		if f.deficit > 0 {
			return
		}
		if f.waiting.len() == 0 {
			return // pop will drop it; look again afterwards
		}
		n := (-f.deficit/d.quantum + 1) * d.quantum
		if need < 0 || n < need {
			need = n
		}
	}
	if need <= 0 {
		return
	}
	for _, f := range d.lists[onOld].all() {
		f.deficit += need
	}
}

// charge accounts used CPU time to a turn of f that held a slot, replacing
// the quantum its grant reserved. When contended is false (nobody waited
// during the slice) the flow's deficit is left alone: DRR orders
// competitors, and time nobody else wanted is not a debt.
func (d *drr) charge(f *flow, used time.Duration, contended bool) {
	if contended {
		f.deficit += d.quantum - used
		// No banking beyond one quantum.
		f.deficit = min(f.deficit, d.quantum)
	}
}

// release ends a turn of f that held a slot (charge first).
func (d *drr) release(f *flow, now time.Time) {
	f.running--
	if f.running == 0 && f.waiting.len() == 0 {
		f.idleSince = now
		d.maybeIdle(f)
	}
}

// maybeIdle forgets an idle flow without debt (a debt is kept until
// forgiven, so leaving cannot wipe it).
func (d *drr) maybeIdle(f *flow) {
	if f.running == 0 && f.waiting.len() == 0 && f.list == onNone && f.deficit >= 0 {
		delete(d.flows, f.uid)
	}
}

// sweep forgets flows idle for forgiveAfter or longer, debt included, and
// takes them off the lists (where an idle flow stays for a while so that
// leaving and coming back cannot make it new again). Called now and then.
func (d *drr) sweep(now time.Time) {
	gone := false
	for uid, f := range d.flows {
		if f.running == 0 && f.waiting.len() == 0 && now.Sub(f.idleSince) >= forgiveAfter {
			delete(d.flows, uid)
			if f.list != onNone {
				f.list = onNone
				gone = true
			}
		}
	}
	if !gone {
		return
	}
	for l := onNew; l <= onOld; l++ {
		q := &d.lists[l]
		live := q.all()[:0]
		for _, f := range q.all() {
			if f.list == l {
				live = append(live, f)
			}
		}
		clear(q.buf[q.h+len(live):])
		q.buf = q.buf[:q.h+len(live)]
	}
}

// queue is a FIFO. The zero value is empty.
type queue[T any] struct {
	buf []*T
	h   int // index of the first live element
}

type (
	turnQueue = queue[Turn]
	flowQueue = queue[flow]
)

func (q *queue[T]) len() int { return len(q.buf) - q.h }

// head returns the first element, or nil.
func (q *queue[T]) head() *T {
	if q.len() == 0 {
		return nil
	}
	return q.buf[q.h]
}

func (q *queue[T]) push(x *T) {
	// Reclaim the dead prefix once it dominates, so that a queue that
	// never empties (a flood) does not grow without bound.
	if q.h > 32 && q.h >= len(q.buf)/2 {
		n := copy(q.buf, q.buf[q.h:])
		clear(q.buf[n:])
		q.buf, q.h = q.buf[:n], 0
	}
	q.buf = append(q.buf, x)
}

// pop removes and returns the first element; the queue must not be empty.
func (q *queue[T]) pop() *T {
	x := q.buf[q.h]
	q.buf[q.h] = nil
	q.h++
	if q.h == len(q.buf) {
		q.buf, q.h = q.buf[:0], 0
	}
	return x
}

// all returns the live elements, first to last (valid until the next
// push or pop).
func (q *queue[T]) all() []*T { return q.buf[q.h:] }
