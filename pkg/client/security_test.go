package client

// The adversarial suite (issue 9): an untrusted process — uid 65534 when
// the tests run as root, re-executing this test binary — attacks objects
// of the owner (this process, root) through everything it was lent or can
// open. Each attack checks the errno of every refusal in the attacker and
// then, in the owner, that the owner's object is intact. docs/security.md
// states the promises these tests hold the daemon to.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// attackEnv names the attack a re-executed "attacker" child runs.
const attackEnv = "BPFD_ATTACK"

// pinRootEnv passes the daemon's pin root to the attacker.
const pinRootEnv = "BPFD_ATTACK_PINROOT"

// scratchEnv passes a directory the attacker may write outside the pin
// root.
const scratchEnv = "BPFD_ATTACK_SCRATCH"

// secret is what the owner keeps in its maps; no attack may read or
// change it.
var secret = []byte("owner's secret!!")

// attackServer is a daemon with pins whose log is observed (no secret
// may reach it).
type attackServer struct {
	*server
	logs    *observer.ObservedLogs
	scratch string // world-writable, outside the pin root
}

func startAttackServer(t *testing.T) *attackServer {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s := startServerWith(t, func(dir string) *demux.Config {
		return &demux.Config{Logger: zap.New(core), PinRoot: filepath.Join(dir, "pins")}
	})
	scratch := filepath.Join(s.dir, "scratch")
	if err := os.Mkdir(scratch, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(scratch, 0o1777)
	t.Cleanup(func() {
		for _, e := range logs.All() {
			line := fmt.Sprint(e.Message, e.ContextMap())
			for i := 0; i+6 <= len(secret); i++ {
				if strings.Contains(line, string(secret[i:i+6])) {
					t.Errorf("the daemon logged part of the owner's secret: %s %v", e.Message, e.ContextMap())
					break
				}
			}
		}
	})
	return &attackServer{server: s, logs: logs, scratch: scratch}
}

func (s *attackServer) pinRoot() string { return filepath.Join(s.dir, "pins") }

// attacker is the owner's end of the channel to a running attacker.
type attacker struct {
	t    *testing.T
	conn *net.UnixConn
	wait func() error
	out  *bytes.Buffer
}

// startAttacker runs attack name as uid 65534 (when root) against s,
// passing fds (the owner keeps its copies).
func startAttacker(t *testing.T, s *attackServer, name string, fds ...int) *attacker {
	t.Helper()
	peer, out, wait := startChild(t, "attacker", attackEnv+"="+name, socketEnvTest+"="+s.path,
		pinRootEnv+"="+s.pinRoot(), scratchEnv+"="+s.scratch)
	pc, err := fdConn(int(peer.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	a := &attacker{t: t, conn: pc, wait: wait, out: out}
	a.send("fds", fds...)
	return a
}

// send sends a message (and fds) to the attacker.
func (a *attacker) send(msg string, fds ...int) {
	a.t.Helper()
	if err := scmrights.SendConn(a.conn, []byte(msg), fds...); err != nil {
		a.t.Fatalf("send %q: %v\n%s", msg, err, trimOutput(a.out.Bytes()))
	}
}

// expect waits for message want from the attacker.
func (a *attacker) expect(want string) {
	a.t.Helper()
	a.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	b := make([]byte, 256)
	n, fds, err := scmrights.RecvConn(a.conn, b, 0)
	scmrights.CloseAll(fds)
	if err != nil || string(b[:n]) != want {
		a.t.Fatalf("attacker said %q (%v), want %q\n%s", b[:n], err, want, trimOutput(a.out.Bytes()))
	}
}

// finish waits for the attacker; it must have seen every refusal it
// expected.
func (a *attacker) finish() {
	a.t.Helper()
	if err := a.wait(); err != nil {
		// The refusals that went as expected are noise here.
		var bad []string
		for _, l := range strings.Split(a.out.String(), "\n") {
			if !strings.HasPrefix(l, "refused as expected: ") {
				bad = append(bad, l)
			}
		}
		a.t.Fatalf("attacker: %v\n%s", err, strings.Join(bad, "\n"))
	}
	a.t.Logf("attacker:\n%s", trimOutput(a.out.Bytes()))
}

// ownerMap creates a map holding secret under key 0 (an array of 16-byte
// values unless typ says otherwise), closed at cleanup.
func ownerMap(t *testing.T, c *Conn, typ MapType, flags uint32) *Map {
	t.Helper()
	n := uint32(4)
	if typ == Array {
		n = 1 // programs may take direct value pointers into it
	}
	m := newTestMap(t, c, MapSpec{Type: typ, KeySize: 4, ValueSize: 16, MaxEntries: n, Flags: flags, Name: "owned"})
	if flags&FlagRdonly == 0 {
		if err := m.Update(u32le(0), secret, UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// intact checks that the owner's map still holds secret at key 0 (for a
// map the owner can read) and answers Info.
func intact(t *testing.T, m *Map) {
	t.Helper()
	if _, err := m.Info(); err != nil {
		t.Fatalf("owner's map after the attack: %v", err)
	}
	if m.Mode()&ModeRead == 0 || m.info.Flags&FlagRdonly != 0 {
		return
	}
	v := make([]byte, 16)
	if err := m.Lookup(u32le(0), v); err != nil || !bytes.Equal(v, secret) {
		t.Fatalf("owner's map after the attack holds %q (%v), want %q", v, err, secret)
	}
}

// ---- the attacker side ----

// childAttacker is the re-executed attacker: it receives its fds, runs
// the attack named in attackEnv and reports every refusal that was not
// the expected one.
func childAttacker() error {
	pc, err := fdConn(3)
	if err != nil {
		return err
	}
	defer pc.Close()
	ap := &attackPeer{conn: pc}
	msg, fds := ap.recv()
	if msg != "fds" {
		return fmt.Errorf("first message %q", msg)
	}
	ap.fds = fds
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	defer c.Close()
	ap.c = c
	fn := attacks[os.Getenv(attackEnv)]
	if fn == nil {
		return fmt.Errorf("unknown attack %q", os.Getenv(attackEnv))
	}
	if err := fn(ap); err != nil {
		return err
	}
	if len(ap.failures) > 0 {
		return errors.New(strings.Join(ap.failures, "\n"))
	}
	return nil
}

// attackPeer is the attacker's state: its connection to the daemon, the
// fds the owner sent, its channel to the owner and what went wrong.
type attackPeer struct {
	c        *Conn
	conn     *net.UnixConn
	fds      []int
	failures []string
}

func (p *attackPeer) send(msg string) {
	if err := scmrights.SendConn(p.conn, []byte(msg)); err != nil {
		p.failures = append(p.failures, "send: "+err.Error())
	}
}

func (p *attackPeer) recv() (string, []int) {
	b := make([]byte, 256)
	n, fds, err := scmrights.RecvConn(p.conn, b, 8)
	if err != nil {
		return "recv: " + err.Error(), nil
	}
	return string(b[:n]), fds
}

// wait waits for message want from the owner.
func (p *attackPeer) wait(want string) {
	if got, fds := p.recv(); got != want {
		scmrights.CloseAll(fds)
		p.failures = append(p.failures, fmt.Sprintf("owner said %q, want %q", got, want))
	}
}

// refused records a failure unless err matches want (and is not nil).
func (p *attackPeer) refused(what string, err error, want error) {
	if err == nil {
		p.failures = append(p.failures, what+": succeeded, want "+want.Error())
		return
	}
	if !errors.Is(err, want) {
		p.failures = append(p.failures, fmt.Sprintf("%s: %v, want %v", what, err, want))
		return
	}
	fmt.Printf("refused as expected: %s: %v\n", what, err)
}

// ok records a failure if err is not nil.
func (p *attackPeer) ok(what string, err error) bool {
	if err != nil {
		p.failures = append(p.failures, what+": "+err.Error())
		return false
	}
	return true
}

// pinPath is a path in the pin root.
func pinPath(name string) string { return filepath.Join(os.Getenv(pinRootEnv), name) }

// raw is a bare protocol connection, for requests the client library
// never sends (forged handles, arbitrary fds, wider import modes).
type raw struct{ c *net.UnixConn }

func dialRaw() (*raw, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: os.Getenv(socketEnvTest), Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	return &raw{c}, nil
}

// do sends one request and returns the reply's errno and Ret (fds in the
// reply are closed).
func (r *raw) do(cmd wire.Cmd, attr, data []byte, fds ...int) (unix.Errno, int64) {
	h := wire.ReqHeader{Cmd: cmd, AttrLen: uint32(len(attr)), DataLen: uint32(len(data))}
	msg := wire.AppendReqHeader(nil, h)
	msg = append(append(msg, attr...), data...)
	if err := scmrights.SendConn(r.c, msg, fds...); err != nil {
		return unix.EIO, 0
	}
	b := make([]byte, wire.MaxMessage)
	n, rfds, err := scmrights.RecvConn(r.c, b, wire.MaxFDs)
	scmrights.CloseAll(rfds)
	if err != nil || n < wire.ReplyHeaderSize {
		return unix.EIO, 0
	}
	return unix.Errno(binary.LittleEndian.Uint32(b)), int64(binary.LittleEndian.Uint64(b[8:]))
}

func (r *raw) close() { r.c.Close() }

func handleAttrOf(h uint32, m wire.Mode) []byte {
	return (&wire.HandleAttr{Handle: h, Mode: m}).Append(nil)
}

func elemAttrOf(h uint32) []byte { return (&wire.ElemAttr{Handle: h}).Append(nil) }

// attacks by name.
var attacks = map[string]func(*attackPeer) error{}

func init() {
	attacks["pin-then-revoke"] = attackPinThenRevoke
	attacks["destroy"] = attackDestroy
	attacks["hardlinks"] = attackHardLinks
	attacks["forgery"] = attackForgery
	attacks["revoke-race"] = attackRevokeRace
	attacks["programs"] = attackPrograms
}

// ---- 1, 2: revocation through a pin, destroy by a delegate ----

// TestAttackRevocationThroughPin is issue 9's first and second breaks.
// The owner lends a read-only descriptor; the attacker pins it, opens its
// own pin (a fresh descriptor), reopens that and pins again, keeps a pin
// file open, and tries to destroy through all of them. The owner revokes
// the lent descriptor: every pin the attacker made is gone, every
// descriptor it holds is dead, the pin file it kept open opens nothing,
// and the owner's map and pin are intact.
func TestAttackRevocationThroughPin(t *testing.T) {
	s := startAttackServer(t)
	c := s.dial(t)
	m := ownerMap(t, c, Array, 0)
	if err := c.Pin(m, "own", 0o600); err != nil {
		t.Fatal(err)
	}
	lent, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	a := startAttacker(t, s, "pin-then-revoke", lent.FD())
	a.expect("pinned")
	if err := lent.Revoke(); err != nil {
		t.Fatal(err)
	}
	a.send("revoked")
	a.finish()
	intact(t, m)
	for _, p := range []string{"lent", "lent2"} {
		if _, err := os.Lstat(filepath.Join(s.pinRoot(), p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("attacker's pin %s survived the revocation: %v", p, err)
		}
	}
	own, err := c.OpenPinnedMap("own", ModeAll)
	if err != nil {
		t.Fatalf("owner's pin after the attack: %v", err)
	}
	defer own.Close()
	nodes, err := own.Lineage()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.UID == 65534 || n.Mode == ModeRead {
			t.Errorf("attacker's node left in the lineage: %+v", n)
		}
	}
}

func attackPinThenRevoke(p *attackPeer) error {
	m, err := p.c.ImportMap(p.fds[0])
	if !p.ok("import the lent descriptor", err) {
		return nil
	}
	v := make([]byte, 16)
	p.ok("lookup through the lent descriptor", m.Lookup(u32le(0), v))
	p.refused("update through the lent read-only descriptor", m.Update(u32le(0), make([]byte, 16), UpdateAny), ErrPermission)
	if !p.ok("pin the lent descriptor", p.c.Pin(m, "lent", 0o644)) {
		return nil
	}
	m2, err := p.c.OpenPinnedMap("lent", ModeRead)
	if !p.ok("open own pin of the lent descriptor", err) {
		return nil
	}
	_, err = p.c.OpenPinnedMap("lent", ModeReadWrite)
	p.refused("open own pin of a read-only descriptor for writing", err, ErrAccess)
	_, err = p.c.OpenPinnedMap("lent", ModeRead|ModeDestroy)
	p.refused("destroy right from own pin of a lent descriptor", err, ErrAccess)
	p.refused("destroy through the pin-minted descriptor", m2.Destroy(), ErrPermission)
	p.refused("destroy through the import", m.Destroy(), ErrPermission)
	_, err = m2.Lineage()
	p.refused("lineage through the pin-minted descriptor", err, ErrPermission)
	_, err = m2.RevokeNode(1)
	p.refused("revoke the owner's root node", err, ErrPermission)
	m3, err := m2.Reopen(ModeRead)
	if !p.ok("reopen the pin-minted descriptor", err) {
		return nil
	}
	p.ok("pin the reopened descriptor", p.c.Pin(m3, "lent2", 0o644))
	early, err := unix.Open(pinPath("lent2"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if !p.ok("open lent2", err) {
		return nil
	}
	defer unix.Close(early)
	_, err = p.c.OpenPinnedMap("own", ModeRead)
	p.refused("open the owner's 0600 pin", err, unix.EACCES)
	p.send("pinned")
	p.wait("revoked")

	for name, x := range map[string]*Map{"import": m, "pin-minted": m2, "reopened from it": m3} {
		p.refused("lookup through the "+name+" descriptor after revocation", x.Lookup(u32le(0), v), ErrBadDescriptor)
	}
	for _, name := range []string{"lent", "lent2"} {
		_, err := p.c.OpenPinnedMap(name, ModeRead)
		p.refused("open revoked pin "+name, err, unix.ENOENT)
	}
	r, err := dialRaw()
	if !p.ok("raw dial", err) {
		return nil
	}
	defer r.close()
	if e, _ := r.do(wire.CmdObjGet, (&wire.ObjGetAttr{}).Append(nil), nil, early); e != unix.ENOENT {
		p.failures = append(p.failures, fmt.Sprintf("OBJ_GET of a revoked pin opened before: %v, want ENOENT", e))
	}
	if e, _ := r.do(wire.CmdImport, (&wire.ImportAttr{}).Append(nil), nil, p.fds[0]); e != unix.EBADF {
		p.failures = append(p.failures, fmt.Sprintf("IMPORT of the revoked descriptor: %v, want EBADF", e))
	}
	return nil
}

// ---- 3: destroy by a reader or writer, whatever the map's flags ----

// TestAttackDestroy is issue 9's third break and the destroy right in
// general: for a plain, a BPF_F_RDONLY and a BPF_F_WRONLY map, the
// attacker holds a lent descriptor with every data right the map allows
// and can open the owner's pin with them; it cannot destroy, see or prune
// the lineage through any of them, nor get the destroy right from any
// pin. The maps and the owner's pins are intact.
func TestAttackDestroy(t *testing.T) {
	s := startAttackServer(t)
	c := s.dial(t)
	var fds []int
	var owned []*Map
	for i, tc := range []struct {
		flags uint32
		data  Mode
	}{{0, ModeReadWrite}, {FlagRdonly, ModeRead}, {FlagWronly, ModeWrite}} {
		m := ownerMap(t, c, Array, tc.flags)
		if err := c.Pin(m, fmt.Sprintf("own%d", i), 0o666); err != nil {
			t.Fatal(err)
		}
		lent, err := m.Reopen(tc.data)
		if err != nil {
			t.Fatal(err)
		}
		defer lent.Close()
		fds = append(fds, lent.FD())
		owned = append(owned, m)
	}
	a := startAttacker(t, s, "destroy", fds...)
	a.finish()
	for i, m := range owned {
		intact(t, m)
		if _, err := os.Lstat(filepath.Join(s.pinRoot(), fmt.Sprintf("own%d", i))); err != nil {
			t.Errorf("owner's pin own%d: %v", i, err)
		}
	}
}

func attackDestroy(p *attackPeer) error {
	for i, fd := range p.fds {
		m, err := p.c.ImportMap(fd)
		if !p.ok("import", err) {
			continue
		}
		data := m.Mode()
		p.refused(fmt.Sprintf("map %d: destroy through the lent %v descriptor", i, data), m.Destroy(), ErrPermission)
		own := fmt.Sprintf("own%d", i)
		if o, err := p.c.OpenPinnedMap(own, data); p.ok("open the owner's pin "+own, err) {
			p.refused("destroy through the owner's pin opened "+data.String(), o.Destroy(), ErrPermission)
			_, err = o.Lineage()
			p.refused("lineage through the owner's pin", err, ErrPermission)
			o.Close()
		}
		_, err = p.c.OpenPinnedMap(own, data|ModeDestroy)
		p.refused("destroy right from the owner's pin (not the file's owner)", err, ErrAccess)
		_, err = p.c.OpenPinnedMap(own, ModeDestroy)
		p.refused("destroy right alone from the owner's pin", err, ErrAccess)
		mine := fmt.Sprintf("mine%d", i)
		if p.ok("pin the lent descriptor", p.c.Pin(m, mine, 0o600)) {
			_, err = p.c.OpenPinnedMap(mine, ModeDestroy)
			p.refused("destroy right from own pin of a lent descriptor", err, ErrAccess)
		}
		_, err = m.Reopen(data | ModeDestroy)
		p.refused("reopen with the destroy right", err, ErrPermission)
	}
	return nil
}

// ---- 7: hard links ----

// TestAttackHardLinks is issue 9's seventh break. The owner pins a map
// 0666; the attacker hard-links the pin file outside the pin root and next
// to it: neither link opens the object. The owner unlinks the pin: the
// map is freed and its quota returned although the attacker's links keep
// the inode alive, and they still open nothing.
func TestAttackHardLinks(t *testing.T) {
	s := startAttackServer(t)
	c := s.dial(t)
	base := s.stats(t)
	m, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(u32le(0), secret, UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(m, "shared", 0o666); err != nil {
		t.Fatal(err)
	}
	m.Close()
	a := startAttacker(t, s, "hardlinks")
	a.expect("linked")
	if err := os.Remove(filepath.Join(s.pinRoot(), "shared")); err != nil {
		t.Fatal(err)
	}
	s.waitStats(t, base) // freed, quota returned
	a.send("unpinned")
	a.finish()
}

func attackHardLinks(p *attackPeer) error {
	outside := filepath.Join(os.Getenv(scratchEnv), "link")
	inside := pinPath("mylink")
	for _, l := range []string{outside, inside} {
		if !p.ok("hard link "+l, os.Link(pinPath("shared"), l)) {
			return nil
		}
	}
	m, err := p.c.OpenPinnedMap("shared", ModeRead)
	if p.ok("open the pin by its name", err) {
		m.Close()
	}
	for _, l := range []string{outside, inside} {
		_, err := p.c.OpenPinnedMap(l, ModeRead)
		p.refused("open the object through hard link "+l, err, ErrBadDescriptor)
	}
	p.send("linked")
	p.wait("unpinned")
	for _, l := range []string{outside, inside} {
		_, err := p.c.OpenPinnedMap(l, ModeRead)
		p.refused("open the unpinned object through hard link "+l, err, ErrBadDescriptor)
		os.Remove(l)
	}
	return nil
}

// ---- forged, recycled and foreign handles and descriptors; reopen upward ----

// TestAttackForgery: the attacker, lent a read-only descriptor, tries to
// widen it (REOPEN, IMPORT with more rights), presents fds that are not
// descriptors of this daemon (its own socketpair, a pipe, a pin file, its
// daemon connection, a descriptor of another daemon, a revoked
// descriptor) and handle numbers it does not own (never made, released,
// another connection's). Every attempt is refused with its errno; the
// owner's map is intact.
func TestAttackForgery(t *testing.T) {
	s := startAttackServer(t)
	c := s.dial(t)
	m := ownerMap(t, c, Hash, 0)
	if err := c.Pin(m, "own", 0o644); err != nil {
		t.Fatal(err)
	}
	lent, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer lent.Close()
	revoked, err := m.Reopen(ModeReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	// Another daemon's descriptor.
	other := startServer(t)
	oc := other.dial(t)
	om := newTestMap(t, oc, MapSpec{Type: Hash, KeySize: 4, ValueSize: 16, MaxEntries: 4})
	// The owner's handle numbers are its connection's; the attacker learns
	// them (Info shows nothing else).
	a := startAttacker(t, s, "forgery", lent.FD(), revoked.FD(), om.FD())
	a.expect("ready")
	if err := revoked.Revoke(); err != nil {
		t.Fatal(err)
	}
	a.send(fmt.Sprintf("revoked %d", m.handle))
	a.finish()
	intact(t, m)
	if err := m.Lookup(u32le(1), make([]byte, 16)); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("a key appeared in the owner's map: %v", err)
	}
}

func attackForgery(p *attackPeer) error {
	m, err := p.c.ImportMap(p.fds[0])
	if !p.ok("import the lent descriptor", err) {
		return nil
	}
	_, err = m.Reopen(ModeReadWrite)
	p.refused("reopen read-only as read-write", err, ErrPermission)
	_, err = m.Reopen(ModeWrite)
	p.refused("reopen read-only as write-only", err, ErrPermission)
	_, err = m.Reopen(ModeRead | ModeDestroy)
	p.refused("reopen with the destroy right", err, ErrPermission)

	r, err := dialRaw()
	if !p.ok("raw dial", err) {
		return nil
	}
	defer r.close()
	imp := func(m wire.Mode) []byte { return (&wire.ImportAttr{Mode: m}).Append(nil) }
	if e, _ := r.do(wire.CmdImport, imp(wire.ModeReadWrite), nil, p.fds[0]); e != unix.EPERM {
		p.failures = append(p.failures, fmt.Sprintf("IMPORT read-only as read-write: %v, want EPERM", e))
	}
	if e, _ := r.do(wire.CmdImport, imp(wire.ModeAll), nil, p.fds[0]); e != unix.EPERM {
		p.failures = append(p.failures, fmt.Sprintf("IMPORT read-only with destroy: %v, want EPERM", e))
	}
	// Fds that are not descriptors of this daemon.
	sp, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	var pipe [2]int
	unix.Pipe2(pipe[:], unix.O_CLOEXEC)
	pinFD, _ := unix.Open(pinPath("own"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	connFD, _ := unix.Dup(int(fileFD(r.c)))
	for name, fd := range map[string]int{"own socketpair end": sp[0], "pipe": pipe[0], "pin file": pinFD,
		"daemon connection": connFD, "another daemon's descriptor": p.fds[2]} {
		if e, _ := r.do(wire.CmdImport, imp(0), nil, fd); e != unix.EBADF {
			p.failures = append(p.failures, fmt.Sprintf("IMPORT of %s: %v, want EBADF", name, e))
		} else {
			fmt.Printf("refused as expected: IMPORT of %s: EBADF\n", name)
		}
	}
	for _, fd := range []int{sp[0], sp[1], pipe[0], pipe[1], pinFD, connFD} {
		unix.Close(fd)
	}
	// Handles never made on this connection (the owner's numbers are
	// its own connection's).
	for h := uint32(0); h < 64; h++ {
		if e, _ := r.do(wire.CmdMapLookupElem, elemAttrOf(h), u32le(0)); e != unix.EBADF {
			p.failures = append(p.failures, fmt.Sprintf("lookup through unmade handle %d: %v, want EBADF", h, e))
			break
		}
	}
	// A released handle number.
	e, ret := r.do(wire.CmdImport, imp(0), nil, p.fds[0])
	if !p.ok("raw import", errnoError(e)) {
		return nil
	}
	h := uint32(ret)
	r.do(wire.CmdRelease, handleAttrOf(h, 0), nil)
	if e, _ := r.do(wire.CmdMapLookupElem, elemAttrOf(h), u32le(0)); e != unix.EBADF {
		p.failures = append(p.failures, fmt.Sprintf("lookup through released handle %d: %v, want EBADF", h, e))
	}
	if e, _ := r.do(wire.CmdRevoke, handleAttrOf(h, 0), nil); e != unix.EBADF {
		p.failures = append(p.failures, fmt.Sprintf("revoke through released handle: %v, want EBADF", e))
	}
	// An imported (not maker) handle cannot revoke what it was lent.
	p.refused("revoke through an imported handle", m.Revoke(), ErrPermission)

	rv, err := p.c.ImportMap(p.fds[1])
	if !p.ok("import the descriptor about to be revoked", err) {
		return nil
	}
	p.send("ready")
	msg, _ := p.recv()
	var ownerHandle uint32
	fmt.Sscanf(msg, "revoked %d", &ownerHandle)
	p.refused("update through the revoked descriptor", rv.Update(u32le(1), make([]byte, 16), UpdateAny), ErrBadDescriptor)
	if e, _ := r.do(wire.CmdImport, imp(0), nil, p.fds[1]); e != unix.EBADF {
		p.failures = append(p.failures, fmt.Sprintf("IMPORT of a revoked descriptor: %v, want EBADF", e))
	}
	// The owner's handle number, on the attacker's own connection.
	data := append(u32le(1), make([]byte, 16)...)
	if e, _ := r.do(wire.CmdMapUpdateElem, elemAttrOf(ownerHandle), data); e != unix.EBADF {
		p.failures = append(p.failures, fmt.Sprintf("update through the owner's handle number %d: %v, want EBADF", ownerHandle, e))
	}
	return nil
}

// errnoError is e as an error (nil for 0).
func errnoError(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// fileFD returns c's fd number (the fd stays owned by c).
func fileFD(c *net.UnixConn) uintptr {
	var fd uintptr
	rc, err := c.SyscallConn()
	if err == nil {
		rc.Control(func(f uintptr) { fd = f })
	}
	return fd
}

// ---- revoke-vs-reopen races ----

// TestAttackRevokeRace: while the attacker reopens, pins, opens its pins
// and imports as fast as it can from a lent descriptor on several
// goroutines and connections, the owner revokes. Once REVOKE answered
// nothing the attacker made survives: every descriptor it got (before or
// racing with the revocation) is dead, every pin it made is gone, and the
// lineage holds the owner's nodes only.
func TestAttackRevokeRace(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			s := startAttackServer(t)
			c := s.dial(t)
			m := ownerMap(t, c, Array, 0)
			lent, err := m.Reopen(ModeRead)
			if err != nil {
				t.Fatal(err)
			}
			a := startAttacker(t, s, "revoke-race", lent.FD())
			a.expect("racing")
			time.Sleep(time.Duration(round*20) * time.Millisecond)
			if err := lent.Revoke(); err != nil {
				t.Fatal(err)
			}
			a.send("revoked")
			a.finish()
			intact(t, m)
			nodes, err := m.Lineage()
			if err != nil {
				t.Fatal(err)
			}
			if len(nodes) != 1 {
				t.Fatalf("lineage after the revocation: %+v, want the root only", nodes)
			}
			if ents, _ := os.ReadDir(s.pinRoot()); len(ents) != 0 {
				t.Fatalf("pins left after the revocation: %v", ents)
			}
		})
	}
}

func attackRevokeRace(p *attackPeer) error {
	root, err := p.c.ImportMap(p.fds[0])
	if !p.ok("import", err) {
		return nil
	}
	var mu sync.Mutex
	var held []*Map
	var conns []*Conn
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		c := p.c
		if g > 0 {
			var err error
			if c, err = Dial(os.Getenv(socketEnvTest)); !p.ok("dial", err) {
				return nil
			}
			conns = append(conns, c)
		}
		wg.Add(1)
		go func(g int, c *Conn) {
			defer wg.Done()
			src := root
			if g > 0 {
				if m, err := c.ImportMap(p.fds[0]); err == nil {
					src = m
					mu.Lock()
					held = append(held, m)
					mu.Unlock()
				}
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				keep := func(m *Map, err error) {
					if err == nil {
						mu.Lock()
						held = append(held, m)
						mu.Unlock()
					}
				}
				r, err := src.Reopen(ModeRead)
				keep(r, err)
				name := fmt.Sprintf("race-%d-%d", g, i)
				if c.Pin(src, name, 0o600) == nil {
					keep(c.OpenPinnedMap(name, ModeRead))
				}
				if r != nil {
					fd, _ := unix.Dup(r.FD())
					keep(c.ImportMap(fd))
					unix.Close(fd)
				}
			}
		}(g, c)
	}
	time.Sleep(30 * time.Millisecond)
	p.send("racing")
	p.wait("revoked")
	// Whatever is made after REVOKE answered must fail at once; give the
	// racers a moment to try, then stop them.
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	v := make([]byte, 16)
	alive := 0
	mu.Lock()
	for _, m := range held {
		if err := m.Lookup(u32le(0), v); !errors.Is(err, ErrBadDescriptor) {
			alive++
		}
	}
	fmt.Printf("%d descriptors made during the race, %d alive after the revocation\n", len(held), alive)
	if alive != 0 || len(held) == 0 {
		p.failures = append(p.failures, fmt.Sprintf("%d of %d descriptors survived the revocation", alive, len(held)))
	}
	mu.Unlock()
	ents, _ := os.ReadDir(os.Getenv(pinRootEnv))
	for _, e := range ents {
		if _, err := p.c.OpenPinnedMap(e.Name(), ModeRead); err == nil {
			p.failures = append(p.failures, "pin "+e.Name()+" survived the revocation")
		}
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// ---- programs through read-only and write-only handles ----

// TestAttackPrograms: the attacker is lent read-only and write-only
// descriptors of an array and a hash map holding the owner's secret, and
// loads programs through them that try every route to write what it may
// only read, or read what it may only write: stores, atomics (plain and
// fetching), map helpers, helper output and input pointers, direct value
// pointers, spills and fills, bpf-to-bpf calls, bpf_loop and
// bpf_for_each_map_elem callbacks, tail
// calls, trace_printk. Each is refused (EACCES from the verifier, naming
// the instruction, or a faulting run); the owner's maps hold the secret
// and no secret reaches the daemon's log.
func TestAttackPrograms(t *testing.T) {
	s := startAttackServer(t)
	c := s.dial(t)
	arr := ownerMap(t, c, Array, 0)
	hash := ownerMap(t, c, Hash, 0)
	var fds []int
	for _, m := range []*Map{arr, hash} {
		for _, mode := range []Mode{ModeRead, ModeWrite} {
			r, err := m.Reopen(mode)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			fds = append(fds, r.FD())
		}
	}
	a := startAttacker(t, s, "programs", fds...)
	a.finish()
	intact(t, arr)
	intact(t, hash)
}

// route is one attempt: instructions built from the attacker's maps.
type route struct {
	name  string
	insns asm.Instructions
}

// refusedAtRun are the routes refused at run time rather than by the
// verifier, with the check of their run. trace_printk's format is data:
// the helper, not the verifier, refuses to read the value (it prints
// "(fault)", as the kernel does for an unreadable string), so the result
// — the output length — and the daemon's log reveal nothing.
var refusedAtRun = map[string]func(ret uint32, err error) error{
	"helper input: trace_printk %s": func(ret uint32, err error) error {
		if err != nil || ret != uint32(len("(fault)")) {
			return fmt.Errorf("run returned %d, %v; want the length of \"(fault)\"", ret, err)
		}
		return nil
	},
}

// lookupR0 looks up key 0 of m into R0 (exiting with 0 on NULL), keeping
// the context in R6.
func lookupR0(m *Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
	}
}

// tail ends a route: return 0 (the "out" label), then subprograms.
func tail(subs ...asm.Instruction) asm.Instructions {
	return append(asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()}, subs...)
}

func seq(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// cbRef is R2 = &callback (bpf_loop's second argument).
var cbRef = asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("cb")

// writeRoutes try to write map m (through R0 = a value of m, or a direct
// value pointer when array).
func writeRoutes(m *Map, own *Map, array bool) []route {
	rs := []route{
		{"store", seq(lookupR0(m), asm.Instructions{asm.StoreImm(asm.R0, 0, 1, asm.Word)}, tail())},
		{"store of a register", seq(lookupR0(m), asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord)}, tail())},
		{"atomic add", seq(lookupR0(m), asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.StoreXAdd(asm.R0, asm.R1, asm.DWord)}, tail())},
		{"atomic fetch-add", seq(lookupR0(m), asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.FetchAdd.Mem(asm.R0, asm.R1, asm.DWord, 0)}, tail())},
		{"atomic xchg", seq(lookupR0(m), asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.Xchg.Mem(asm.R0, asm.R1, asm.DWord, 8)}, tail())},
		{"atomic cmpxchg", seq(lookupR0(m), asm.Instructions{asm.Mov.Reg(asm.R7, asm.R0), asm.Mov.Imm(asm.R0, 0), asm.Mov.Imm(asm.R1, 1), asm.CmpXchg.Mem(asm.R7, asm.R1, asm.DWord, 0)}, tail())},
		{"map_update_elem", seq(asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.StoreImm(asm.R10, -24, 0, asm.Word), asm.StoreImm(asm.R10, -20, 0, asm.Word),
			asm.StoreImm(asm.R10, -16, 0, asm.Word), asm.StoreImm(asm.R10, -12, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
			asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -24), asm.Mov.Imm(asm.R4, 0), asm.FnMapUpdateElem.Call()}, tail())},
		{"helper output pointer (skb_load_bytes into the value)", seq(lookupR0(m), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.R0), asm.Mov.Imm(asm.R4, 8),
			asm.FnSkbLoadBytes.Call()}, tail())},
		{"helper output pointer (get_current_comm into the value)", seq(lookupR0(m), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 16), asm.FnGetCurrentComm.Call()}, tail())},
		{"spill and fill", seq(lookupR0(m), asm.Instructions{
			asm.StoreMem(asm.R10, -16, asm.R0, asm.DWord), asm.LoadMem(asm.R1, asm.R10, -16, asm.DWord),
			asm.StoreImm(asm.R1, 0, 1, asm.Word)}, tail())},
		{"bpf-to-bpf call", seq(lookupR0(m), asm.Instructions{asm.Mov.Reg(asm.R1, asm.R0), asm.Call.Label("sub")},
			tail(asm.StoreImm(asm.R1, 0, 1, asm.Word).WithSymbol("sub"), asm.Mov.Imm(asm.R0, 0), asm.Return()))},
		// bpf_loop's context must point to the stack: the value pointer
		// travels spilled there, and the callback fills it.
		{"bpf_loop callback", seq(lookupR0(m), asm.Instructions{
			asm.StoreMem(asm.R10, -16, asm.R0, asm.DWord), asm.Mov.Imm(asm.R1, 1), cbRef,
			asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -16), asm.Mov.Imm(asm.R4, 0), asm.FnLoop.Call()},
			tail(asm.LoadMem(asm.R1, asm.R2, 0, asm.DWord).WithSymbol("cb"), asm.StoreImm(asm.R1, 0, 1, asm.Word),
				asm.Mov.Imm(asm.R0, 0), asm.Return()))},
		// bpf_for_each_map_elem hands the callback each value (R3).
		{"for_each_map_elem callback", seq(asm.Instructions{asm.LoadMapPtr(asm.R1, m.FD()), cbRef,
			asm.Mov.Imm(asm.R3, 0), asm.Mov.Imm(asm.R4, 0), asm.FnForEachMapElem.Call()},
			tail(asm.StoreImm(asm.R3, 0, 1, asm.Word).WithSymbol("cb"), asm.Mov.Imm(asm.R0, 0), asm.Return()))},
	}
	if array {
		rs = append(rs,
			route{"direct value pointer store", asm.Instructions{asm.LoadMapValue(asm.R1, m.FD(), 0), asm.StoreImm(asm.R1, 0, 1, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()}},
			route{"direct value pointer as a helper output (skb_load_bytes)", asm.Instructions{
				asm.LoadMapValue(asm.R3, m.FD(), 0), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R4, 8), asm.FnSkbLoadBytes.Call(),
				asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	} else {
		rs = append(rs, route{"map_delete_elem", seq(asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4), asm.FnMapDeleteElem.Call()}, tail())})
	}
	return rs
}

// readRoutes try to read map m (write-only for the program). Only an
// array gives a pointer into its values without a lookup (a direct value
// pointer).
func readRoutes(m *Map, own *Map, array bool) []route {
	rs := []route{
		{"lookup", seq(lookupR0(m), asm.Instructions{asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return()}, tail())},
		// bpf_for_each_map_elem: the callback would see every key and
		// value; the verifier refuses the call on a write-only handle.
		{"for_each_map_elem callback", seq(asm.Instructions{asm.LoadMapPtr(asm.R1, m.FD()), cbRef,
			asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8), asm.Mov.Imm(asm.R5, 0), asm.StoreMem(asm.R10, -8, asm.R5, asm.DWord),
			asm.Mov.Imm(asm.R4, 0), asm.FnForEachMapElem.Call(), asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord), asm.Return()},
			asm.Instructions{asm.LoadMem(asm.R5, asm.R3, 0, asm.DWord).WithSymbol("cb"), asm.StoreMem(asm.R4, 0, asm.R5, asm.DWord),
				asm.Mov.Imm(asm.R0, 0), asm.Return()})},
	}
	if !array {
		return rs
	}
	dv := asm.LoadMapValue(asm.R7, m.FD(), 0)
	return append(rs,
		route{"direct value load", asm.Instructions{dv, asm.LoadMem(asm.R0, asm.R7, 0, asm.DWord), asm.Return()}},
		route{"atomic fetch-add", asm.Instructions{dv, asm.Mov.Imm(asm.R1, 0), asm.FetchAdd.Mem(asm.R7, asm.R1, asm.DWord, 0), asm.Mov.Reg(asm.R0, asm.R1), asm.Return()}},
		route{"atomic xchg", asm.Instructions{dv, asm.Mov.Imm(asm.R1, 0), asm.Xchg.Mem(asm.R7, asm.R1, asm.DWord, 0), asm.Mov.Reg(asm.R0, asm.R1), asm.Return()}},
		route{"helper input: the value copied into another map (map_update_elem)", seq(asm.Instructions{dv,
			asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, own.FD()), asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4), asm.Mov.Reg(asm.R3, asm.R7), asm.Mov.Imm(asm.R4, 0), asm.FnMapUpdateElem.Call()}, tail())},
		route{"helper input: the value as a key (map_lookup_elem)", seq(asm.Instructions{dv,
			asm.LoadMapPtr(asm.R1, own.FD()), asm.Mov.Reg(asm.R2, asm.R7), asm.FnMapLookupElem.Call()}, tail())},
		route{"helper input: trace_printk %s", asm.Instructions{dv,
			asm.StoreImm(asm.R10, -8, 0x7325, asm.Word), // "%s\0\0"
			asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -8), asm.Mov.Imm(asm.R2, 3), asm.Mov.Reg(asm.R3, asm.R7),
			asm.FnTracePrintk.Call(), asm.Return()}},
		route{"spill and fill", asm.Instructions{dv, asm.StoreMem(asm.R10, -16, asm.R7, asm.DWord),
			asm.LoadMem(asm.R1, asm.R10, -16, asm.DWord), asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord), asm.Return()}},
		route{"bpf-to-bpf call", seq(asm.Instructions{dv, asm.Mov.Reg(asm.R1, asm.R7), asm.Call.Label("sub"), asm.Return()},
			asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord).WithSymbol("sub"), asm.Return()})},
		route{"bpf_loop callback", seq(asm.Instructions{dv, asm.StoreMem(asm.R10, -16, asm.R7, asm.DWord),
			asm.Mov.Imm(asm.R1, 1), cbRef, asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -16),
			asm.Mov.Imm(asm.R4, 0), asm.FnLoop.Call(), asm.Return()},
			asm.Instructions{asm.LoadMem(asm.R1, asm.R2, 0, asm.DWord).WithSymbol("cb"),
				asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord), asm.Return()})},
	)
}

func attackPrograms(p *attackPeer) error {
	var lent []*Map
	for _, fd := range p.fds {
		m, err := p.c.ImportMap(fd)
		if !p.ok("import", err) {
			return nil
		}
		lent = append(lent, m)
	}
	arrRO, arrWO, hashRO, hashWO := lent[0], lent[1], lent[2], lent[3]
	own, err := p.c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 16, MaxEntries: 4})
	if !p.ok("own map", err) {
		return nil
	}
	try := func(kind string, r route) {
		prog, err := p.c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: r.insns, License: "GPL", Name: "attack"})
		if err == nil {
			// Loaded: the run must be refused, and change or reveal
			// nothing (the owner checks its maps and the log).
			ret, rerr := prog.Run(&RunOptions{Data: make([]byte, 64)})
			prog.Close()
			if ran := refusedAtRun[r.name]; ran == nil {
				p.failures = append(p.failures, fmt.Sprintf("%s %s: loaded (run: %d, %v)", kind, r.name, ret, rerr))
			} else if err := ran(ret, rerr); err != nil {
				p.failures = append(p.failures, fmt.Sprintf("%s %s: %v", kind, r.name, err))
			} else {
				fmt.Printf("refused as expected: %s %s: at run time\n", kind, r.name)
			}
			return
		}
		var ve *VerifierError
		if !errors.As(err, &ve) || ve.Errno != unix.EACCES || !strings.Contains(ve.Log, "denied") {
			p.failures = append(p.failures, fmt.Sprintf("%s %s: %v, want a verifier EACCES for the access mode", kind, r.name, err))
			return
		}
		fmt.Printf("refused as expected: %s %s: %s\n", kind, r.name, ve.Error())
	}
	for _, r := range writeRoutes(arrRO, own, true) {
		try("write into a read-only array by", r)
	}
	for _, r := range writeRoutes(hashRO, own, false) {
		try("write into a read-only hash by", r)
	}
	for _, r := range readRoutes(arrWO, own, true) {
		try("read from a write-only array by", r)
	}
	for _, r := range readRoutes(hashWO, own, false) {
		try("read from a write-only hash by", r)
	}
	// Tail calls: a program the attacker may put in its own program array
	// is verified with its own handles: one loaded through the read-only
	// handle that writes is refused like any other.
	pa, err := p.c.NewMap(MapSpec{Type: ProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if !p.ok("own program array", err) {
		return nil
	}
	try("write into a read-only array by", route{"a tail-call target", writeRoutes(arrRO, own, true)[0].insns})
	caller := asm.Instructions{
		asm.LoadMapPtr(asm.R2, pa.FD()), asm.Mov.Imm(asm.R3, 0), asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0), asm.Return(),
	}
	cp, err := p.c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: caller, License: "GPL"})
	if p.ok("load a tail-calling program", err) {
		cp.Close()
	}
	return nil
}
