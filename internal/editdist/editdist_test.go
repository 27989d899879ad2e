package editdist

import "testing"

func TestLevenshtein(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want int
	}{
		{name: "equal", a: "lookup", b: "lookup", want: 0},
		{name: "transposed letters", a: "lokup", b: "lookup", want: 1},
		{name: "substitution", a: "getpid", b: "getuid", want: 1},
		{name: "empty", a: "", b: "dump", want: 4},
		{name: "both empty", a: "", b: "", want: 0},
		{name: "unrelated", a: "map", b: "prog", want: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Levenshtein(tt.a, tt.b); got != tt.want {
				t.Errorf("Levenshtein(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
			}
			if got := Levenshtein(tt.b, tt.a); got != tt.want {
				t.Errorf("Levenshtein(%q, %q) = %d, want %d (symmetric)", tt.b, tt.a, got, tt.want)
			}
		})
	}
}
