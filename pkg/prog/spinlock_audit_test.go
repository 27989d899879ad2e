package prog

func init() {
	helperAudit[HelperSpinLock] = auditRow{memory: "reads the lock word (r1, 4 bytes; the verifier guarantees a value's bpf_spin_lock) and takes it by compare-and-swap",
		args: []auditArg{{reg: 1}}}
	helperAudit[HelperSpinUnlock] = auditRow{memory: "reads the lock word (r1, 4 bytes) and releases it",
		args: []auditArg{{reg: 1}}}
}
