package maps

import "math/bits"

// jhash and jhash2 are the kernel's include/linux/jhash.h (Bob Jenkins'
// lookup3), which the bloom filter hashes values with: with
// BPF_F_ZERO_SEED a bpfd bloom filter sets exactly the kernel's bits, so
// even its false positives are the kernel's.

const jhashInitval = 0xdeadbeef

func jhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

func jhashFinal(a, b, c uint32) uint32 {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// jhash hashes k, any length, with initval.
func jhash(k []byte, initval uint32) uint32 {
	a := jhashInitval + uint32(len(k)) + initval
	b, c := a, a
	for len(k) > 12 {
		a += ne.Uint32(k)
		b += ne.Uint32(k[4:])
		c += ne.Uint32(k[8:])
		a, b, c = jhashMix(a, b, c)
		k = k[12:]
	}
	switch len(k) {
	case 12:
		c += uint32(k[11]) << 24
		fallthrough
	case 11:
		c += uint32(k[10]) << 16
		fallthrough
	case 10:
		c += uint32(k[9]) << 8
		fallthrough
	case 9:
		c += uint32(k[8])
		fallthrough
	case 8:
		b += uint32(k[7]) << 24
		fallthrough
	case 7:
		b += uint32(k[6]) << 16
		fallthrough
	case 6:
		b += uint32(k[5]) << 8
		fallthrough
	case 5:
		b += uint32(k[4])
		fallthrough
	case 4:
		a += uint32(k[3]) << 24
		fallthrough
	case 3:
		a += uint32(k[2]) << 16
		fallthrough
	case 2:
		a += uint32(k[1]) << 8
		fallthrough
	case 1:
		a += uint32(k[0])
		return jhashFinal(a, b, c)
	}
	return c
}

// jhash2 hashes k, a whole number of native-endian 32-bit words.
func jhash2(k []byte, initval uint32) uint32 {
	n := uint32(len(k) / 4)
	a := jhashInitval + n<<2 + initval
	b, c := a, a
	for n > 3 {
		a += ne.Uint32(k)
		b += ne.Uint32(k[4:])
		c += ne.Uint32(k[8:])
		a, b, c = jhashMix(a, b, c)
		n -= 3
		k = k[12:]
	}
	switch n {
	case 3:
		c += ne.Uint32(k[8:])
		fallthrough
	case 2:
		b += ne.Uint32(k[4:])
		fallthrough
	case 1:
		a += ne.Uint32(k)
		return jhashFinal(a, b, c)
	}
	return c
}
