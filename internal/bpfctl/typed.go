package bpfctl

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfd-project/bpfd/pkg/btfvalue"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// Typed keys and values: a map created with BTF (clang -g objects, or
// MapSpec.Key/Value) prints its keys and values as bpftool does with BTF
// — typed JSON, indented in text mode, under "formatted" beside the bytes
// with -j — and takes them as JSON: "key json TEXT", "value json TEXT".
// Per-CPU maps hold one value per possible CPU: printed as
// [{"cpu": N, "value": V}], written as one value for every CPU (bpftool's
// rule) or a list of them.

// elemTypes are a map's key and value types (nil when it has none).
type elemTypes struct {
	key, value btf.Type
	perCPU     int // values per element (per-CPU maps), else 0
	stride     int // bytes per CPU value
}

// typesOf returns m's types, or nil if it was created without BTF.
func (a *App) typesOf(m *client.Map) *elemTypes {
	k, v, err := m.Types()
	if err != nil {
		return nil
	}
	et := &elemTypes{key: k, value: v}
	if buf := m.ValueBufferSize(); buf != m.ValueSize() {
		et.stride = (m.ValueSize() + 7) &^ 7
		et.perCPU = buf / et.stride
	}
	return et
}

// valueBuffer returns a buffer for one element's value(s) of m.
func valueBuffer(m *client.Map) []byte { return make([]byte, m.ValueBufferSize()) }

// typedKey decodes a key (as hex bytes if the map has no key type).
func (et *elemTypes) typedKey(key []byte) (any, error) {
	if et.key == nil {
		return jsonBytes(key), nil
	}
	return btfvalue.Decode(et.key, key)
}

// typedValue decodes a value buffer: one value, or per CPU.
func (et *elemTypes) typedValue(size int, value []byte) (any, error) {
	if et.perCPU == 0 {
		return btfvalue.Decode(et.value, value)
	}
	out := make([]btfvalue.Object, 0, et.perCPU)
	for cpu := range et.perCPU {
		v, err := btfvalue.Decode(et.value, value[cpu*et.stride:cpu*et.stride+size])
		if err != nil {
			return nil, err
		}
		out = append(out, btfvalue.Object{{Name: "cpu", Value: json.Number(fmt.Sprint(cpu))}, {Name: "value", Value: v}})
	}
	return out, nil
}

// element is one typed element: {"key": K, "value": V} (per-CPU maps:
// "values").
func (et *elemTypes) element(size int, key, value []byte) (btfvalue.Object, error) {
	k, err := et.typedKey(key)
	if err != nil {
		return nil, err
	}
	v, err := et.typedValue(size, value)
	if err != nil {
		return nil, err
	}
	name := "value"
	if et.perCPU > 0 {
		name = "values"
	}
	return btfvalue.Object{{Name: "key", Value: k}, {Name: name, Value: v}}, nil
}

// formattedJSON is an element in -j output with BTF: the bytes, as
// without BTF, and the typed element (bpftool's "formatted").
type formattedJSON struct {
	Key       []string        `json:"key"`
	Value     []string        `json:"value"`
	Formatted btfvalue.Object `json:"formatted"`
}

// printTyped prints v as bpftool prints BTF-formatted elements in text
// mode: indented JSON.
func (a *App) printTyped(v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	a.Stdout.Write(append(b, '\n'))
	return nil
}

// jsonWords turns "json TEXT" key or value words into "hex ..." words
// through typ (what names the argument); other words are returned as
// they are.
func jsonWords(what string, words []string, typ btf.Type, perCPU int) ([]string, error) {
	if len(words) == 0 || words[0] != "json" {
		return words, nil
	}
	if typ == nil {
		return nil, &cliError{code: ExitUsage, msg: fmt.Sprintf("%s json: the map has no BTF type for its %s", what, what),
			hint: fmt.Sprintf("give the %s as bytes; maps get types from clang -g objects (prog load) or client.MapSpec.Key/Value", what)}
	}
	if len(words) != 2 {
		return nil, usagef("%s json takes one word: quote the JSON ('{\"packets\": 1}')", what)
	}
	b, err := btfvalue.Encode(typ, []byte(words[1]))
	if err != nil {
		return nil, usagef("%s json %s: %v", what, words[1], err)
	}
	if perCPU > 0 && what == "value" {
		// One value for every CPU, as bpftool writes per-CPU maps.
		stride := (len(b) + 7) &^ 7
		all := make([]byte, stride*perCPU)
		for cpu := range perCPU {
			copy(all[cpu*stride:], b)
		}
		b = all
	}
	return []string{"hex", hex.EncodeToString(b)}, nil
}

// sameBytes reports whether a JSON document of typ reproduces b (the
// round trip bpfctl promises).
func sameBytes(typ btf.Type, doc []byte, b []byte) bool {
	back, err := btfvalue.Encode(typ, doc)
	return err == nil && bytes.Equal(back, b)
}
