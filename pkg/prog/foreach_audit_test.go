package prog

func init() {
	helperAudit[HelperForEachMapElem] = auditRow{memory: "none: r3 is handed to the callback, whose own loads and stores are checked; key and value are new regions (read-only key, value with the handle's access)",
		setup: func(h *auditHarness, r *[5]uint64) { r[0], r[1], r[3] = h.hashPtr, funcPtrTag, 0 }}
}
