// Package demux is bpfd's server: it accepts connections on a
// SOCK_SEQPACKET Unix socket, decodes requests (package wire), dispatches
// them to objects, and answers in request order. It owns the daemon-wide
// object registry, descriptors, per-connection handle tables and quotas.
//
// # Objects, descriptors, handles
//
// An object (a map or a program) lives in the registry under an id that is
// never reused while the daemon runs. It is reference counted: each live
// descriptor, handle and pin, each program using a map, each program-array
// slot and each attachment holds one reference; when the count reaches
// zero the object is closed and its quota returned.
//
// A descriptor is the client end of a socketpair(AF_UNIX, SOCK_SEQPACKET)
// made for one (object, mode). The daemon keeps the peer end (shut down for
// reading, so no one can queue data into it) and knows the client end by its
// SO_COOKIE. One epoll goroutine watches every peer end for EPOLLHUP, which
// the kernel raises when the last copy of the client end is closed anywhere,
// in-flight SCM_RIGHTS copies included; the descriptor's reference is then
// dropped and the peer end closed.
//
// A handle is a small integer local to one connection, naming (object,
// mode, source descriptor). Handles are only touched by their connection's
// goroutine, except that revocation marks them dead from another goroutine
// (an atomic flag); a dead handle answers EBADF.
//
// Lineage (lineage.go; docs/design.md, "The authority tree"): every
// descriptor and pin is a node of its object's tree, below the node its
// authority came from; each handle hangs on its descriptor. Nothing but
// the creating descriptor is ever a root. CmdRevoke (the maker handle) and
// CmdRevokeNode (the destroy right) kill a node's whole subtree, pins and
// what was opened from them included; CmdDestroy kills the whole tree.
// The destroy right (wire.ModeDestroy) starts on the creating descriptor,
// is never passed on by REOPEN, and passes through a pin only to the pin
// file's owner. Pinned objects' trees are persisted with their pins.
//
// # Concurrency
//
// One goroutine per connection reads a request, executes it, sends the reply
// and reads the next, so replies come back in request order however many
// requests a client pipelines. Connections run in parallel; objects are safe
// for concurrent use (package maps). The registry is guarded by one mutex,
// taken only by commands that create, import, reopen, release or revoke, by
// hangups and by Stats, never by element operations.
//
// # Allocation
//
// Each connection owns its receive, control, fd and reply buffers. Element
// operations (lookup, update, delete, next key, lookup-and-delete, freeze)
// allocate nothing once the connection is warm; errors are preallocated.
//
// docs/protocol.md is the protocol reference: every command, its attr, its
// data, its reply and its errnos.
package demux
