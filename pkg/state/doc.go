// Package state keeps what a bpfd daemon must not lose when its process
// ends: the description of every object, descriptor and connection, in a
// form a new process can take over. It is a package of its own because
// the job is a mechanism of its own — a crash-consistent journal, the
// handoff of a running daemon to a freshly exec'd binary, and systemd's
// file descriptor store — that the server (package demux) only feeds and
// reads.
//
// # What lives where
//
// A daemon has three kinds of state, kept in three places:
//
//   - Bytes of map storage: files under the runtime directory (tmpfs
//     under /run), mapped MAP_SHARED (package maps, Config.Dir). The page
//     cache holds every store the moment it is made, so a crash of the
//     process loses none. Not this package's business beyond naming them.
//   - The registry: objects (their kind, spec, owner, program
//     instructions, links), the authority tree of every object
//     (descriptor and pin nodes), program-array slots, seccomp
//     attachments. It changes only when objects and descriptors are
//     created, die or are revoked — never on element operations — and is
//     written to the Journal in the runtime directory before the command
//     that changed it answers.
//   - Kernel objects only a live process can hold: the daemon's ends of
//     client descriptors (socketpairs), client connections, the listening
//     socket, seccomp listeners, netfilter queue sockets. On a planned
//     upgrade they are inherited across exec (Handoff); under systemd the
//     ends of descriptors, seccomp listeners and queue sockets also sit in
//     the service manager's file descriptor store (FDStore), so that they
//     outlive a crash.
//
// An Image is the registry at one instant, with the names of the file
// descriptors that go with it. A new process rebuilds the server from an
// Image and the file descriptors it received (by name), the same way
// after an upgrade (the Image comes from the old process, every fd
// inherited) and after a crash (the Image is replayed from the Journal,
// the fds come from the store; connections are gone).
//
// # Crash consistency
//
// Journal records are appended with one write(2) each, framed with their
// length and a CRC-32C, so a record is either whole or detectably torn;
// a torn record can only be the last one (appends are serialised), and is
// one whose command never answered. Replay applies records in order and
// stops at the first bad one. Compaction writes a full Image to a new
// file and renames it over the journal: the old or the new file, never a
// mixture. Nothing is fsynced: the journal lives on tmpfs and only has to
// survive the process, not the machine (reboots are covered by the
// durable state directory, package internal/daemon).
//
// # Formats
//
// Image and journal records are JSON (they change with the registry and
// are small next to map storage), framed as described at EncodeImage and
// Journal. Decoders treat their input as untrusted (fuzzed): a bad file
// gives an error, never a panic; the server then re-checks everything it
// restores (lineage, modes, quotas, map regions).
package state
