package prog

func init() {
	helperAudit[HelperRedirectMap] = auditRow{memory: "none: the key and flags are values",
		setup: func(h *auditHarness, r *[5]uint64) { r[0], r[1], r[2] = h.hashPtr, 0, 0 }}
}
