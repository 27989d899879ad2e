# Socket filter: count packets in element 0 of the array map bound to
# map_fd 0, and accept skb->len bytes.
mov %r6, %r1
stw [%r10-4], 0
lddw %r1, map_fd 0
mov %r2, %r10
add %r2, -4
call 1                      # bpf_map_lookup_elem
jeq %r0, 0, out
ldxdw %r1, [%r0]
add %r1, 1
stxdw [%r0], %r1
out:
ldxw %r0, [%r6+0]           # skb->len
exit
