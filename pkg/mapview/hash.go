package mapview

import (
	"encoding/binary"
	"math/bits"
)

// Hash constants (odd 64-bit multipliers with well-mixed bits).
const (
	hashK1 = 0xa0761d6478bd642f
	hashK2 = 0xe7037ed1a0b428db
	hashK3 = 0x8ebc6af09c88c6e3
)

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// Hash is the hash function of bpfd's hash-family maps (hash, LRU hash and
// their per-CPU forms, hash of maps), over a key and the map's 64-bit seed
// (Header.Seed). A reader that maps a map's storage computes it to find a
// key's bucket: bucket = Hash(seed, key) & (NBuckets-1).
//
// Definition (all arithmetic modulo 2^64; mix(a, b) is the high 64 bits of
// the 128-bit product a*b XORed with its low 64 bits; words are read
// little-endian):
//
//	h := seed ^ (len(key) * K1)
//	for each full 8-byte word w of key, in order:  h = mix(h ^ w, K2)
//	if 1..7 bytes remain, w = those bytes zero-extended:  h = mix(h ^ w ^ K3, K2)
//	h = mix(h ^ K1, K3)
//	return uint32(h) ^ uint32(h >> 32)
//
// with K1 = 0xa0761d6478bd642f, K2 = 0xe7037ed1a0b428db,
// K3 = 0x8ebc6af09c88c6e3. The seed is random per map. It is not secret
// from readers (they need it), so a holder of a read descriptor could craft
// colliding keys; that only slows lookups in that one map (chains stay
// bounded by max_entries), which a holder of the write descriptor could do
// by filling the map anyway.
func Hash(seed uint64, key []byte) uint32 {
	h := seed ^ uint64(len(key))*hashK1
	for len(key) >= 8 {
		h = mix(h^binary.LittleEndian.Uint64(key), hashK2)
		key = key[8:]
	}
	if len(key) > 0 {
		var w uint64
		switch len(key) {
		case 4:
			w = uint64(binary.LittleEndian.Uint32(key))
		default:
			for i := len(key) - 1; i >= 0; i-- {
				w = w<<8 | uint64(key[i])
			}
		}
		h = mix(h^w^hashK3, hashK2)
	}
	h = mix(h^hashK1, hashK3)
	return uint32(h) ^ uint32(h>>32)
}

// HashU32 is Hash of a 4-byte key whose little-endian value is k, for
// the daemon's program-side lookups (no loop, inlinable). It is the same
// function: HashU32(seed, k) == Hash(seed, key) for key = k in
// little-endian.
func HashU32(seed uint64, k uint32) uint32 {
	h := mix(seed^(4*hashK1)%(1<<64)^uint64(k)^hashK3, hashK2)
	h = mix(h^hashK1, hashK3)
	return uint32(h) ^ uint32(h>>32)
}

// HashU64 is Hash of an 8-byte key whose little-endian value is k (see
// HashU32).
func HashU64(seed, k uint64) uint32 {
	h := mix(seed^(8*hashK1)%(1<<64)^k, hashK2)
	h = mix(h^hashK1, hashK3)
	return uint32(h) ^ uint32(h>>32)
}
