package bpfctl

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/errno"
)

// cliError is a failure bpfctl reports: a message, the errno it carries
// (0 if none), a hint saying what to do, an optional verifier log, and
// the exit code.
type cliError struct {
	code  int
	msg   string
	errno unix.Errno
	hint  string
	log   string
	usage string // command path for "Run '... --help'", if not the failing command's
}

func (e *cliError) Error() string {
	if e.hint == "" {
		return e.msg
	}
	return e.msg + ": " + e.hint
}

func (e *cliError) errnoName() string {
	if e.errno == 0 {
		return ""
	}
	return unix.ErrnoName(e.errno)
}

// exitError carries the exit code of bpfctl exec's child; nothing is
// printed for it.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usagef is a usage error (exit 2).
func usagef(format string, args ...any) error {
	return &cliError{code: ExitUsage, msg: fmt.Sprintf(format, args...)}
}

// kind says what an operation did, to choose the hint and exit code of
// its failure.
type kind int

const (
	kRead    kind = iota // read an element or the object (lookup, dump, info, run)
	kWrite               // write an element or the object (update, delete, freeze)
	kOpen                // open a pin file and present it (OBJ_GET)
	kPin                 // make a pin or pin directory
	kCreate              // create a map or load a program
	kFile                // read or write a local file (object, --asm, --data, --data-out)
	kDestroy             // open a pin for its destroy right, destroy or revoke through it
	kOther
)

// errnoOf returns the errno err carries, or 0.
func errnoOf(err error) unix.Errno { return errno.Of(err, 0) }

// errText is err's errno described as "operation not permitted (EPERM)",
// prefixed with the path of a failed open; or err's text if it carries no
// errno.
func errText(err error) string {
	e := errnoOf(err)
	if e == 0 {
		return err.Error()
	}
	s := errnoString(e)
	var pe *os.PathError
	if errors.As(err, &pe) {
		s = pe.Op + " " + pe.Path + ": " + s
	}
	return s
}

func errnoString(e unix.Errno) string {
	if e == client.ENOTSUPP {
		return "operation not supported (ENOTSUPP)"
	}
	name := unix.ErrnoName(e)
	if name == "" {
		name = fmt.Sprintf("errno %d", int(e))
	}
	return e.Error() + " (" + name + ")"
}

// fail turns err from operation op (of kind k; elem for map element
// operations) into a cliError with a hint.
func fail(op string, k kind, elem bool, err error) error {
	if err == nil {
		return nil
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return err
	}
	e := errnoOf(err)
	out := &cliError{code: ExitFailed, msg: op + ": " + errText(err), errno: e}
	var ve *client.VerifierError
	if errors.As(err, &ve) {
		out.msg = op + ": " + errnoString(ve.Errno)
		out.hint = "the verifier refused the program; its log follows"
		out.log = ve.Log
		return out
	}
	if errors.Is(err, client.ErrClosed) && !errors.Is(err, client.ErrBadDescriptor) {
		out.code = ExitUnreachable
		out.hint = "the connection to bpfd was lost; is the daemon still running?"
		return out
	}
	var pe *os.PathError
	isPath := errors.As(err, &pe)
	switch {
	case elem && e == unix.ENOENT && op == "getnext":
		out.code = ExitNotFound
		out.msg = op + ": no next key (ENOENT)"
		out.hint = "the key given is the last one, or the map is empty"
	case elem && e == unix.ENOENT:
		out.code = ExitNotFound
		out.msg = op + ": no such key (ENOENT)"
	case e == unix.EPERM && k == kWrite:
		out.hint = "this descriptor cannot write (read-only pin or open mode, a BPF_F_RDONLY map, or a frozen map); reopen the pin with write access or ask its owner"
	case e == unix.EPERM && k == kRead:
		out.hint = "this descriptor cannot read (write-only pin or a BPF_F_WRONLY map); open the pin with read access or ask its owner"
	case (e == unix.EACCES || e == unix.EPERM) && k == kDestroy && !isPath:
		out.hint = "only the owner of the pin file holds the destroy right through it, and only if the pin was made from the creating descriptor (a reopened or lent descriptor never carries it); ask the object's owner"
	case isPath && (k == kFile || k == kCreate):
		// A local file (an object, an assembly file, packet data),
		// not a pin: the path error says it all.
		switch e {
		case unix.ENOENT:
			out.hint = "no such file (the path is taken relative to the current directory, not the pin root)"
		case unix.EACCES:
			out.hint = "you may not read or write that file"
		}
	case e == unix.EACCES && isPath:
		out.hint = "the pin file's permissions do not allow this access; ask for less access or ask the pin's owner (bpfctl pin ls shows them)"
	case e == unix.EACCES && k == kOpen:
		out.hint = "the pin grants less access than asked (see MODE in 'bpfctl pin ls'); use a pin that grants it, or ask its owner"
	case e == unix.EACCES && k == kPin:
		out.hint = "you may not create files in that pin directory; choose another or ask its owner"
	case (e == unix.ENXIO || e == unix.ELOOP || e == unix.EISDIR) && isPath:
		out.hint = "that is not a bpfd pin file (pins are regular files, never symlinks); list pins with 'bpfctl pin ls'"
	case e == unix.ENOENT && isPath:
		out.hint = "no such pin; list pins with 'bpfctl pin ls'"
	case e == unix.ENOENT && k == kOpen:
		out.hint = "the pin was removed meanwhile"
	case e == unix.ENOENT && k == kPin:
		out.hint = "the directory does not exist; make it with 'bpfctl pin mkdir'"
	case e == unix.EEXIST && k == kPin:
		out.hint = "a file exists at that path; remove it (rm) or choose another path"
	case e == unix.EEXIST && elem:
		out.hint = "the key exists; use --any or --exist to replace it"
	case e == unix.EBADF && (k == kOpen || k == kDestroy):
		out.hint = "the file is not a bpfd pin (or belongs to another daemon), or was reached through another name than the pin's (a hard link, a bind mount at another path); open the pin by its path under the pin root"
	case e == unix.ENOENT && k == kDestroy:
		out.hint = "the pin was removed or revoked meanwhile"
	case e == unix.E2BIG && k == kWrite:
		out.hint = "the map is full, or the index is beyond max_entries"
	case e == unix.ENOSPC || e == unix.ENOMEM:
		out.hint = "a quota of your uid is exhausted; see 'bpfctl status' and free objects (unpin, close)"
	case e == unix.EOPNOTSUPP && (k == kOpen || k == kPin):
		out.hint = "the daemon has pins disabled; start bpfd with --pin-root"
	case e == unix.EOPNOTSUPP || e == client.ENOTSUPP:
		out.hint = "bpfd does not support this for this object type"
	case e == unix.EINVAL && (k == kOpen || k == kPin):
		out.hint = "check the path (inside the pin root, no symlinks) and the object type"
	case e == unix.EINVAL && elem:
		out.hint = "this map type refuses the operation or its flags"
	}
	return out
}

// splitTrim splits s at sep and trims spaces; empty fields are dropped.
func splitTrim(s, sep string) []string {
	var out []string
	for _, f := range strings.Split(s, sep) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
