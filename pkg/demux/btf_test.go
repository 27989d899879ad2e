package demux

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// fixtureBTF is the raw BTF of the key and value types of a fixture's
// maps, as the client makes it (cilium/ebpf's Builder), and their ids.
func fixtureBTF(tb testing.TB, obj, mapName string) ([]byte, btf.TypeID, btf.TypeID) {
	tb.Helper()
	spec, err := ebpf.LoadCollectionSpec("../../testdata/bpf/" + obj + ".bpf.o")
	if err != nil {
		tb.Fatal(err)
	}
	ms := spec.Maps[mapName]
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	kid, err := b.Add(ms.Key)
	if err != nil {
		tb.Fatal(err)
	}
	vid, err := b.Add(ms.Value)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return raw, kid, vid
}

func btfLoadAttr() []byte { return (&wire.BTFLoadAttr{}).Append(nil) }

func createWithBTF(ks, vs uint32, bh, kid, vid uint32) []byte {
	a := wire.MapCreateAttr{MapType: maps.TypeHash, KeySize: ks, ValueSize: vs, MaxEntries: 4,
		BTFHandle: bh, BTFKeyTypeID: kid, BTFValueTypeID: vid}
	return a.Append(nil)
}

// TestBTFObjects: BTF_LOAD checks its input; a map created with BTF
// reports it and keeps the BTF object alive after its handle is released;
// BTF_GET returns it to holders of the map.
func TestBTFObjects(t *testing.T) {
	_, path := startServer(t, nil)
	c := dial(t, path)
	raw, kid, vid := fixtureBTF(t, "counter", "by_proto")
	for _, tc := range []struct {
		name string
		data []byte
		want unix.Errno
	}{
		{name: "empty", data: nil, want: unix.EINVAL},
		{name: "not BTF", data: []byte("\x7fELF and more bytes than a header"), want: unix.EINVAL},
		{name: "truncated", data: raw[:len(raw)/2], want: unix.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := c.do(wire.CmdBTFLoad, btfLoadAttr(), tc.data); r.errno() != tc.want {
				t.Fatalf("BTF_LOAD: %v, want %v", r.errno(), tc.want)
			}
		})
	}
	r := c.do(wire.CmdBTFLoad, btfLoadAttr(), raw)
	if r.errno() != 0 {
		t.Fatal(r.errno())
	}
	bh := uint32(r.h.Ret)
	bi := replyInfo(t, r)
	if bi.ObjType != wire.ObjBTF || bi.BTFID != bi.ID || bi.Mode&wire.ModeWrite != 0 {
		t.Fatalf("BTF object info %+v", bi)
	}
	for _, tc := range []struct {
		name         string
		ks, vs       uint32
		bh, kid, vid uint32
		want         unix.Errno
	}{
		{name: "value size mismatch", ks: 4, vs: 8, bh: bh, kid: uint32(kid), vid: uint32(vid), want: unix.EINVAL},
		{name: "key size mismatch", ks: 8, vs: 16, bh: bh, kid: uint32(kid), vid: uint32(vid), want: unix.EINVAL},
		{name: "no value type", ks: 4, vs: 16, bh: bh, kid: uint32(kid), want: unix.EINVAL},
		{name: "unknown type id", ks: 4, vs: 16, bh: bh, vid: 999, want: unix.EINVAL},
		{name: "type ids without BTF", ks: 4, vs: 16, vid: uint32(vid), want: unix.EINVAL},
		{name: "not a BTF handle", ks: 4, vs: 16, bh: 999, vid: uint32(vid), want: unix.EBADF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := c.do(wire.CmdMapCreate, createWithBTF(tc.ks, tc.vs, tc.bh, tc.kid, tc.vid), nil); r.errno() != tc.want {
				t.Fatalf("MAP_CREATE: %v, want %v", r.errno(), tc.want)
			}
		})
	}
	r = c.do(wire.CmdMapCreate, createWithBTF(4, 16, bh, uint32(kid), uint32(vid)), nil)
	if r.errno() != 0 {
		t.Fatal(r.errno())
	}
	mh := uint32(r.h.Ret)
	mi := replyInfo(t, r)
	if mi.BTFID != bi.ID || mi.BTFKeyTypeID != uint32(kid) || mi.BTFValueTypeID != uint32(vid) {
		t.Fatalf("map info %+v, want BTF %d/%d/%d", mi, bi.ID, kid, vid)
	}
	// The map holds the BTF object: release its handle and descriptor.
	if r := c.do(wire.CmdRelease, handleAttr(bh, 0), nil); r.errno() != 0 {
		t.Fatal(r.errno())
	}
	g := c.do(wire.CmdBTFGet, handleAttr(mh, 0), nil)
	if g.errno() != 0 || uint32(g.h.Ret) != bi.ID || string(g.data) != string(raw) {
		t.Fatalf("BTF_GET: %v id %d, %d bytes (want %d)", g.errno(), g.h.Ret, len(g.data), len(raw))
	}
	plain := c.do(wire.CmdMapCreate, mapCreateAttr(maps.TypeHash, 4, 4, 1, 0, ""), nil)
	if g := c.do(wire.CmdBTFGet, handleAttr(uint32(plain.h.Ret), 0), nil); g.errno() != unix.ENOENT {
		t.Fatalf("BTF_GET of a map without BTF: %v", g.errno())
	}
}

// FuzzParseBTF: untrusted BTF blobs never crash the daemon's parser.
func FuzzParseBTF(f *testing.F) {
	raw, _, _ := fixtureBTF(f, "counter", "by_proto")
	f.Add(raw)
	raw2, _, _ := fixtureBTF(f, "globals", ".data")
	f.Add(raw2)
	f.Add([]byte{0x9f, 0xeb, 1, 0, 24, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		spec, err := parseBTF(b)
		if err != nil {
			if !errors.Is(err, ErrBTF) {
				t.Fatalf("error %v does not wrap ErrBTF", err)
			}
			return
		}
		for id := btf.TypeID(1); id < 64; id++ {
			typ, err := spec.TypeByID(id)
			if err != nil {
				break
			}
			btf.Sizeof(typ)
		}
	})
}

// TestBTFPersisted: a pinned map's BTF is saved with it and comes back
// after a restart.
func TestBTFPersisted(t *testing.T) {
	base := traversableDir(t)
	per := &memPersister{}
	e, stop := startPinServer(t, base, per)
	c := dial(t, e.sock)
	raw, kid, vid := fixtureBTF(t, "counter", "by_proto")
	r := c.do(wire.CmdBTFLoad, btfLoadAttr(), raw)
	if r.errno() != 0 {
		t.Fatal(r.errno())
	}
	m := c.do(wire.CmdMapCreate, createWithBTF(4, 16, uint32(r.h.Ret), uint32(kid), uint32(vid)), nil)
	if m.errno() != 0 {
		t.Fatal(m.errno())
	}
	if e := c.pin(uint32(m.h.Ret), 0o600, "typed"); e != 0 {
		t.Fatal(e)
	}
	po := per.only(t)
	if po.BTF == nil || string(po.BTF.Raw) != string(raw) || po.BTF.KeyTypeID != uint32(kid) || po.BTF.ValueTypeID != uint32(vid) {
		t.Fatalf("saved BTF %+v", po.BTF)
	}
	c.nc.Close()
	stop()

	e2, _ := startPinServer(t, base, &memPersister{})
	if n, err := e2.srv.RestorePinned(per.only(t)); err != nil || n != 1 {
		t.Fatalf("RestorePinned = %d, %v", n, err)
	}
	c2 := dial(t, e2.sock)
	g := c2.get(filepath.Join(e2.root, "typed"), unix.O_RDONLY, 0)
	if g.errno() != 0 {
		t.Fatal(g.errno())
	}
	info := replyInfo(t, g)
	if info.BTFID == 0 || info.BTFKeyTypeID != uint32(kid) || info.BTFValueTypeID != uint32(vid) {
		t.Fatalf("restored map info %+v", info)
	}
	if b := c2.do(wire.CmdBTFGet, handleAttr(uint32(g.h.Ret), 0), nil); b.errno() != 0 || string(b.data) != string(raw) {
		t.Fatalf("restored BTF_GET: %v, %d bytes", b.errno(), len(b.data))
	}
}
