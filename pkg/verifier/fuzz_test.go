package verifier

import (
	"errors"
	"testing"
)

// FuzzVerify checks that Verify never panics and always returns either a
// result or an *Error, on arbitrary instruction bytes, and that what it
// accepts full pruning (no relevance analysis) accepts too.
func FuzzVerify(f *testing.F) {
	for _, tc := range cases() {
		f.Add(tc.bytes(f), tc.env != nil && tc.env.Context.Name == "xdp_md")
	}
	f.Fuzz(func(t *testing.T, raw []byte, xdp bool) {
		env := socketEnv(countsMap, configMap, jmpMap, dataMap)
		if xdp {
			env = xdpEnv(countsMap, configMap, jmpMap, dataMap)
		}
		env.MaxInsnsProcessed = 20000
		checkVerify(t, raw, env)
		checkVerify(t, normalize(raw), env)
		checkRelevanceSound(t, normalize(raw), env)
	})
}

// validOps are opcodes the verifier accepts in some form, so that
// normalize turns random bytes into programs that get past decoding.
var validOps = []byte{
	0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77, 0x7f,
	0x87, 0x97, 0x9f, 0xa7, 0xaf, 0xb7, 0xbf, 0xc7, 0xcf, 0xd4, 0xdc, 0x04, 0x0c, 0x14, 0x1c, 0x24,
	0x2c, 0x34, 0x3c, 0x44, 0x4c, 0x54, 0x5c, 0x64, 0x6c, 0x74, 0x7c, 0x84, 0x94, 0x9c, 0xa4, 0xac,
	0xb4, 0xbc, 0xc4, 0xcc, 0x61, 0x69, 0x71, 0x79, 0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b,
	0xc3, 0xdb, 0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d, 0x55, 0x5d, 0x65, 0x6d, 0x75,
	0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0x16, 0x1e, 0x26, 0x2e, 0x36, 0x3e, 0x56,
	0x5e, 0xa6, 0xae, 0xb6, 0xbe, 0xc6, 0xce, 0xd6, 0xde, 0x85, 0x95, 0x18, 0x28, 0x30, 0x48, 0x50,
}

// normalize maps every opcode byte to a valid opcode, keeps registers in
// range and ends the program with exit.
func normalize(raw []byte) []byte {
	n := len(raw) / 8
	if n == 0 {
		return nil
	}
	out := append([]byte(nil), raw[:n*8]...)
	for i := 0; i < n; i++ {
		p := out[i*8:]
		p[0] = validOps[int(p[0])%len(validOps)]
		p[1] = (p[1]&0x0f)%11 | ((p[1]>>4)%11)<<4
		if p[0] == 0x85 {
			p[1] &= 0x10 // helper or pseudo call
			p[2], p[3] = 0, 0
		}
	}
	copy(out[(n-1)*8:], []byte{0x95, 0, 0, 0, 0, 0, 0, 0})
	return out
}

func checkVerify(t *testing.T, raw []byte, env *Env) {
	t.Helper()
	res, err := Verify(raw, env)
	if err != nil {
		var ve *Error
		if !errors.As(err, &ve) || ve.Log == "" || ve.Errno == 0 {
			t.Fatalf("bad error %T %v", err, err)
		}
		return
	}
	if res == nil || len(res.Subprogs) == 0 || res.Subprogs[0] != 0 {
		t.Fatalf("bad result %+v", res)
	}
}
