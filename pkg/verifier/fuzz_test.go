package verifier

import (
	"errors"
	"testing"
)

// FuzzVerify checks that Verify never panics and always returns either a
// result or an *Error, on arbitrary instruction bytes.
func FuzzVerify(f *testing.F) {
	for _, tc := range cases() {
		f.Add(tc.bytes(f), tc.env.Context.Name == "xdp_md")
	}
	f.Fuzz(func(t *testing.T, raw []byte, xdp bool) {
		env := socketEnv(countsMap, configMap, jmpMap, dataMap)
		if xdp {
			env = xdpEnv(countsMap, configMap, jmpMap, dataMap)
		}
		env.MaxInsnsProcessed = 20000
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
	})
}
