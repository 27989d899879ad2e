package prog

// GPLCompatible reports whether license is GPL-compatible, as the kernel's
// license_is_gpl_compatible (GPL-only helpers need it; bpftool shows
// "gpl").
func GPLCompatible(license string) bool { return gplCompatible(license) }
