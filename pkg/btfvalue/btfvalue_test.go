package btfvalue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

var (
	u8   = &btf.Int{Name: "__u8", Size: 1}
	u16  = &btf.Int{Name: "__u16", Size: 2}
	u32  = &btf.Int{Name: "__u32", Size: 4}
	u64  = &btf.Int{Name: "__u64", Size: 8}
	s32  = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	s64  = &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	char = &btf.Int{Name: "char", Size: 1, Encoding: btf.Char | btf.Signed}
	bl   = &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}
	u128 = &btf.Int{Name: "__int128 unsigned", Size: 16}
	verd = &btf.Enum{Name: "verdict", Size: 4, Values: []btf.EnumValue{{Name: "PASS", Value: 2}, {Name: "DROP", Value: 1}}}

	// struct flow { u16 port; u8 proto; u8 :3, ecn:2, df:1; u32 pkts;
	//               char name[8]; union { u32 v4; u8 v6[4]; }; enum verdict v; bool seen; long delta; }
	flow = &btf.Struct{Name: "flow", Size: 40, Members: []btf.Member{
		{Name: "port", Type: u16, Offset: 0},
		{Name: "proto", Type: u8, Offset: 16},
		{Name: "", Type: u8, Offset: 24, BitfieldSize: 3},
		{Name: "ecn", Type: u8, Offset: 27, BitfieldSize: 2},
		{Name: "df", Type: u8, Offset: 29, BitfieldSize: 1},
		{Name: "pkts", Type: u32, Offset: 32},
		{Name: "name", Type: &btf.Array{Type: char, Index: u32, Nelems: 8}, Offset: 64},
		{Name: "", Type: &btf.Union{Size: 4, Members: []btf.Member{
			{Name: "v4", Type: u32}, {Name: "v6", Type: &btf.Array{Type: u8, Index: u32, Nelems: 4}}}}, Offset: 128},
		{Name: "v", Type: verd, Offset: 160},
		{Name: "seen", Type: bl, Offset: 192},
		{Name: "delta", Type: s64, Offset: 256},
	}}
)

func flowBytes() []byte {
	b := make([]byte, 40)
	binary.LittleEndian.PutUint16(b[0:], 443)
	b[2] = 6
	b[3] = 2<<3 | 1<<5 // ecn 2, df 1
	binary.LittleEndian.PutUint32(b[4:], 1000)
	copy(b[8:], "eth0")
	binary.LittleEndian.PutUint32(b[16:], 0x0100007f)
	binary.LittleEndian.PutUint32(b[20:], 2)
	b[24] = 1
	binary.LittleEndian.PutUint64(b[32:], uint64(0xffffffffffffffff)) // -1
	return b
}

func TestDecodeEncode(t *testing.T) {
	tests := []struct {
		name string
		typ  btf.Type
		b    []byte
		json string
	}{
		{name: "u32", typ: u32, b: []byte{8, 0, 0, 0}, json: `8`},
		{name: "u64 max", typ: u64, b: bytes.Repeat([]byte{0xff}, 8), json: `18446744073709551615`},
		{name: "s32 negative", typ: s32, b: []byte{0xfe, 0xff, 0xff, 0xff}, json: `-2`},
		{name: "typedef", typ: &btf.Typedef{Name: "port_t", Type: u16}, b: []byte{0x50, 0}, json: `80`},
		{name: "const volatile", typ: &btf.Const{Type: &btf.Volatile{Type: u32}}, b: []byte{1, 0, 0, 0}, json: `1`},
		{name: "bool", typ: bl, b: []byte{1}, json: `true`},
		{name: "enum", typ: verd, b: []byte{2, 0, 0, 0}, json: `"PASS"`},
		{name: "enum unnamed value", typ: verd, b: []byte{7, 0, 0, 0}, json: `7`},
		{name: "int128", typ: u128, b: append([]byte{1, 2}, make([]byte, 14)...), json: `"0x00000000000000000000000000000201"`},
		{name: "char array", typ: &btf.Array{Type: char, Index: u32, Nelems: 6}, b: []byte("eth0\x00\x00"), json: `"eth0"`},
		{name: "char array not a string", typ: &btf.Array{Type: char, Index: u32, Nelems: 2}, b: []byte{1, 2}, json: `[1,2]`},
		{name: "array", typ: &btf.Array{Type: u16, Index: u32, Nelems: 3}, b: []byte{1, 0, 2, 0, 3, 0}, json: `[1,2,3]`},
		{name: "pointer", typ: &btf.Pointer{Target: u32}, b: []byte{0, 0x10, 0, 0, 0, 0, 0, 0}, json: `4096`},
		{name: "float", typ: &btf.Float{Name: "double", Size: 8}, b: binary.LittleEndian.AppendUint64(nil, 0x3ff8000000000000), json: `1.5`},
		{name: "struct", typ: flow, b: flowBytes(),
			json: `{"port":443,"proto":6,"ecn":2,"df":1,"pkts":1000,"name":"eth0","v4":16777343,"v6":[127,0,0,1],"v":"PASS","seen":true,"delta":-1}`},
		{name: "datasec", typ: &btf.Datasec{Name: ".data", Size: 8, Vars: []btf.VarSecinfo{
			{Type: &btf.Var{Name: "hits", Type: u32}, Offset: 0, Size: 4},
			{Type: &btf.Var{Name: "limit", Type: s32}, Offset: 4, Size: 4}}},
			b: []byte{5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, json: `{"hits":5,"limit":-1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Decode(tc.typ, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(v)
			if err != nil || string(got) != tc.json {
				t.Fatalf("Decode = %s, %v; want %s", got, err, tc.json)
			}
			if tc.name == "struct" {
				// A union written through one member: the other is its
				// alias; JSON in with both is refused, with one it is
				// the same bytes.
				if _, err := Encode(tc.typ, got); err == nil {
					t.Fatal("Encode accepted two members of a union")
				}
				got = bytes.Replace(got, []byte(`"v6":[127,0,0,1],`), nil, 1)
			}
			b, err := Encode(tc.typ, got)
			if err != nil || !bytes.Equal(b, tc.b) {
				t.Fatalf("Encode(%s) = %x, %v; want %x", got, b, err, tc.b)
			}
			if b2, err := EncodeValue(tc.typ, v); tc.name != "struct" && (err != nil || !bytes.Equal(b2, tc.b)) {
				t.Fatalf("EncodeValue(Decode) = %x, %v; want %x", b2, err, tc.b)
			}
		})
	}
}

func TestEncodeAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  btf.Type
		json string
		want []byte
	}{
		{name: "hex integer", typ: u32, json: `"0x1f"`, want: []byte{0x1f, 0, 0, 0}},
		{name: "enum by number", typ: verd, json: `1`, want: []byte{1, 0, 0, 0}},
		{name: "short array", typ: &btf.Array{Type: u8, Index: u32, Nelems: 4}, json: `[9]`, want: []byte{9, 0, 0, 0}},
		{name: "missing members", typ: flow, json: `{"pkts": 7}`, want: append(append(make([]byte, 4), 7, 0, 0, 0), make([]byte, 32)...)},
		{name: "char list", typ: &btf.Array{Type: char, Index: u32, Nelems: 2}, json: `[104, 105]`, want: []byte("hi")},
		{name: "signed via hex bits", typ: s32, json: `"0xffffffff"`, want: []byte{0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.typ, []byte(tc.json))
			if err != nil || !bytes.Equal(b, tc.want) {
				t.Fatalf("Encode(%s) = %x, %v; want %x", tc.json, b, err, tc.want)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  btf.Type
		json string
	}{
		{name: "out of range", typ: u8, json: `256`},
		{name: "negative unsigned", typ: u32, json: `-1`},
		{name: "signed out of range", typ: s32, json: `2147483648`},
		{name: "not an integer", typ: u32, json: `1.5`},
		{name: "string for int", typ: u32, json: `"eight"`},
		{name: "unknown member", typ: flow, json: `{"nosuch": 1}`},
		{name: "unknown enum name", typ: verd, json: `"REDIRECT"`},
		{name: "too many elements", typ: &btf.Array{Type: u8, Index: u32, Nelems: 2}, json: `[1,2,3]`},
		{name: "string too long", typ: &btf.Array{Type: char, Index: u32, Nelems: 2}, json: `"abc"`},
		{name: "bitfield overflow", typ: flow, json: `{"ecn": 4}`},
		{name: "two values", typ: u32, json: `1 2`},
		{name: "not JSON", typ: u32, json: `{`},
		{name: "object for int", typ: u32, json: `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := Encode(tc.typ, []byte(tc.json)); !errors.Is(err, ErrValue) {
				t.Fatalf("Encode(%s) = %x, %v; want ErrValue", tc.json, b, err)
			}
		})
	}
	if _, err := Decode(u32, []byte{1}); !errors.Is(err, ErrValue) {
		t.Fatalf("Decode of a short value: %v", err)
	}
}

// TestFixtureTypes decodes and re-encodes values of the fixtures' map
// types as clang emitted them (struct counts, a data section).
func TestFixtureTypes(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec("../../testdata/bpf/counter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps["by_proto"]
	b := make([]byte, ms.ValueSize)
	binary.LittleEndian.PutUint64(b, 1000)
	binary.LittleEndian.PutUint64(b[8:], 64000)
	v, err := Decode(ms.Value, b)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(v)
	if string(j) != `{"packets":1000,"bytes":64000}` {
		t.Fatalf("struct counts: %s", j)
	}
	if back, err := Encode(ms.Value, j); err != nil || !bytes.Equal(back, b) {
		t.Fatalf("round trip: %x %v", back, err)
	}
}

// FuzzDecode: any bytes of a rich type decode; re-encoding what was
// decoded and decoding again gives the same value (padding and unnamed
// bits aside, which come back zero).
func FuzzDecode(f *testing.F) {
	f.Add(flowBytes())
	f.Add(make([]byte, 40))
	f.Add(bytes.Repeat([]byte{0xff}, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 40 {
			return
		}
		v, err := Decode(flow, b)
		if err != nil {
			t.Fatal(err)
		}
		j1, _ := json.Marshal(v)
		// Drop the union's second view (an alias of the first).
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(j1))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		delete(m, "v6")
		in, _ := json.Marshal(m)
		back, err := Encode(flow, in)
		if err != nil {
			t.Fatalf("Encode(%s): %v", in, err)
		}
		v2, err := Decode(flow, back)
		if err != nil {
			t.Fatal(err)
		}
		if j2, _ := json.Marshal(v2); !bytes.Equal(j1, j2) {
			t.Fatalf("round trip changed the value:\n%s\n%s", j1, j2)
		}
	})
}
