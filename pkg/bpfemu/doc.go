// Package bpfemu answers a process's own bpf(2) calls with bpfd (draft).
package bpfemu
